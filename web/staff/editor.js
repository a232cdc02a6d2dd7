// posbot staff console: 知识库, the knowledge editor (editors and admins; the server refuses agents).
// Pick a topic, error code or brand, change its fields, 保存并发布: the server lints the whole
// knowledge base, writes the YAML file (kb/content) and rebuilds the KB, so the bot answers with it
// from the next message. Each save is in the history, with who, when and what changed, and can be
// undone (恢复). "试一试" shows which answers retrieval ranks for a question, with their scores.
"use strict";
(function () {
  const { api, register, $ } = window.posbotStaff;
  const KIND_NAMES = { topic: "话题", error_code: "错误码", brand: "品牌" };
  const ACTIONS = { save: "修改", create: "新建", restore: "恢复" };
  const VERDICTS = { answer: "ok", clarify: "warning", none: "error" };
  let catalog = null;   // {items, kinds, choices}
  let current = null;   // the open entity: {kind, id, file, line, fields, version}

  function expired(status) {
    if (status === 401) { location.reload(); return true; }
    return false;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "testid") node.dataset.testid = v; else node.setAttribute(k, v);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function when(iso) {
    return new Date(iso).toLocaleString("zh-CN");
  }

  // ---------------------------------------------------------------- the list
  async function loadCatalog() {
    $("kb-error").textContent = "";
    const { status, data } = await api("GET", "kb/items");
    if (expired(status)) return;
    if (status !== 200) { $("kb-error").textContent = data.error || "读取失败，请稍后重试"; return; }
    catalog = data;
    $("kb-broken").textContent = data.problems.length
      ? "知识库文件现在就有问题，修好之前任何保存都会被拒绝：\n" + data.problems.join("\n") : "";
    renderList();
    if (!current) loadRecent();
  }

  function renderList() {
    const list = $("kb-list");
    list.textContent = "";
    const q = $("kb-search").value.trim().toLowerCase();
    const kind = $("kb-kind").value;
    const found = catalog.items.filter((i) => (!kind || i.kind === kind) && (!q
      || i.id.toLowerCase().includes(q) || i.title.toLowerCase().includes(q)
      || (i.detail || "").toLowerCase().includes(q)));
    $("kb-count").textContent = "共 " + found.length + " 条";
    for (const item of found.slice(0, 200)) {
      const li = el("li");
      const button = el("button", { type: "button", testid: "kb-item", class: "kb-item" });
      button.dataset.kind = item.kind;
      button.dataset.id = item.id;
      if (current && current.kind === item.kind && current.id === item.id) button.setAttribute("aria-current", "true");
      button.append(el("span", { class: "kb-kind" }, KIND_NAMES[item.kind]), el("span", { class: "kb-title" }, item.title),
        el("small", { class: "kb-where" }, item.file + (item.kind === "topic" ? " · " + item.id : "")));
      button.addEventListener("click", () => openEntity(item.kind, item.id));
      li.appendChild(button);
      list.appendChild(li);
    }
    if (!found.length) list.appendChild(el("li", { class: "none" }, "没有找到，换个词试试"));
  }

  // ---------------------------------------------------------------- the form
  async function openEntity(kind, id) {
    setResult("", "");
    const { status, data } = await api("GET", "kb/items/" + kind + "/" + encodeURIComponent(id));
    if (expired(status)) return;
    if (status !== 200) { setResult("error", data.error || "读取失败"); return; }
    current = data;
    renderForm();
    renderList();
    loadHistory();
    $("kb-form").scrollIntoView({ block: "nearest" });  // on a phone the form is under the list
  }

  function newEntity() {
    if (!catalog) return;
    const kind = $("kb-kind").value || "topic";
    const fields = {};
    for (const field of catalog.kinds[kind].fields) {
      fields[field.name] = field.kind === "list" ? [] : field.kind === "map" ? {} : field.kind === "flag" ? false
        : (field.choices.length ? field.choices[0] : "");
    }
    current = { kind, id: "", fields, version: null, isNew: true };
    setResult("", "");
    renderForm();
    renderList();
    $("kb-history-title").textContent = "";
    $("kb-history").textContent = "";
  }

  function fieldValue(field, value) {
    if (field.kind === "list") return value.join("\n");
    if (field.kind === "map") return Object.entries(value).map(([k, v]) => k + "：" + v).join("\n");
    return value;
  }

  function renderForm() {
    const form = $("kb-form");
    form.hidden = false;
    form.textContent = "";
    const spec = catalog.kinds[current.kind];
    if (current.isNew) {
      form.appendChild(el("h3", {}, "新建" + spec.label));
      form.appendChild(el("p", { class: "hint" }, "要新建别的类别（话题、错误码、品牌），先在左上方的类别里选。id 和问法都不能和已有的重复；保存前同样会检查整个知识库。"));
      const where = el("label", { class: "kb-field" });
      where.appendChild(el("span", {}, "加到文件（加在文件最后）"));
      const files = el("select", { id: "kb-new-file", testid: "kb-new-file" });
      for (const file of catalog.files[current.kind]) files.appendChild(el("option", { value: file }, file));
      where.appendChild(files);
      form.appendChild(where);
    } else {
      form.appendChild(el("h3", {}, spec.label + "「" + current.id + "」"));
      form.appendChild(el("p", { class: "hint", testid: "kb-where" }, "文件 kb/content/" + current.file + " 第 " + current.line + " 行"));
    }
    for (const field of spec.fields) {
      const value = current.fields[field.name];
      const label = el("label", { class: "kb-field kb-" + field.kind });
      label.appendChild(el("span", {}, field.label + (field.required ? "" : "（可不填）")));
      let input;
      const locked = !current.isNew && ((current.kind === "topic" && field.name === "id") || (current.kind === "brand" && field.name === "name"));
      if (field.kind === "flag") {
        input = el("input", { type: "checkbox" });
        input.checked = Boolean(value);
        label.classList.add("kb-check");
        label.prepend(input);
      } else if (field.choices.length) {
        input = el("select");
        for (const choice of field.choices.includes(value) ? field.choices : [value, ...field.choices]) {
          const option = el("option", { value: choice }, choice);
          if (choice === value) option.selected = true;
          input.appendChild(option);
        }
        label.appendChild(input);
      } else if (field.kind === "text") {
        input = el("input", { type: "text" });
        input.value = value;
        if (field.name === "flow") {
          input.setAttribute("list", "kb-flows");
          input.placeholder = "例如 walk:printer、handoff";
        }
        if (locked) input.readOnly = true;
        label.appendChild(input);
      } else {
        input = el("textarea", { rows: String(Math.min(12, Math.max(field.kind === "long" ? 3 : 2, String(fieldValue(field, value)).split("\n").length + 1))) });
        input.value = fieldValue(field, value);
        if (field.kind === "map") input.placeholder = "拉卡拉：……（每行一个品牌）";
        label.appendChild(input);
      }
      input.dataset.field = field.name;
      input.dataset.testid = "kb-field-" + field.name;
      form.appendChild(label);
    }
    const flows = el("datalist", { id: "kb-flows" });
    for (const flow of catalog.choices.flow) flows.appendChild(el("option", { value: flow }));
    form.appendChild(flows);
    const actions = el("div", { class: "actions" });
    const save = el("button", { type: "submit", testid: "kb-save", class: "kb-save" }, current.isNew ? "添加并发布" : "保存并发布");
    actions.appendChild(save);
    actions.appendChild(el("span", { class: "hint" }, "保存前会检查整个知识库；通过后立即生效，不用重启。"));
    form.appendChild(actions);
  }

  function collect() {
    const spec = catalog.kinds[current.kind];
    const fields = {};
    for (const field of spec.fields) {
      const input = $("kb-form").querySelector("[data-field=\"" + field.name + "\"]");
      if (field.kind === "flag") fields[field.name] = input.checked;
      else if (field.kind === "list") fields[field.name] = input.value.split("\n").map((s) => s.trim()).filter(Boolean);
      else if (field.kind === "map") {
        const map = {};
        for (const line of input.value.split("\n")) {
          const at = line.search(/[：:]/);
          if (at > 0) map[line.slice(0, at).trim()] = line.slice(at + 1).trim();
          else if (line.trim()) map[line.trim()] = "";
        }
        fields[field.name] = map;
      } else fields[field.name] = input.value;
    }
    return fields;
  }

  function setResult(kind, message, problems) {
    const result = $("kb-result");
    result.className = "kb-result " + kind;
    result.textContent = message;
    $("kb-problems").textContent = (problems || []).join("\n");
    $("kb-problems").hidden = !(problems && problems.length);
    if (message) result.scrollIntoView({ block: "nearest" });
  }

  async function submit(event) {
    event.preventDefault();
    if (!current) return;
    const button = $("kb-form").querySelector(".kb-save");
    button.disabled = true;
    setResult("", "正在检查并发布…");
    const { status, data } = current.isNew
      ? await api("POST", "kb/items/" + current.kind, { file: $("kb-new-file").value, fields: collect() })
      : await api("POST", "kb/items/" + current.kind + "/" + encodeURIComponent(current.id),
        { fields: collect(), version: current.version });
    button.disabled = false;
    if (expired(status)) return;
    if (status === 200 && current.isNew) {
      await openEntity(data.kind, data.id);
      setResult("ok", data.message);
      loadCatalog();
      return;
    }
    if (status === 200) {
      setResult("ok", data.message);
      if (data.saved) {
        current.version = data.version;
        loadHistory();
        loadCatalog();
      }
      return;
    }
    if (status === 400 && data.problems) {
      setResult("error", "内容检查没有通过，文件没有改动。请按下面的提示修改（文件:行: 问题）：", data.problems);
      return;
    }
    setResult("error", data.error || "保存失败");
    if (status === 409 && data.version) {
      const reload = el("button", { type: "button", class: "kb-reload" }, "重新打开（放弃我的修改）");
      reload.addEventListener("click", () => openEntity(current.kind, current.id));
      $("kb-result").append(" ", reload);
    }
  }

  // ---------------------------------------------------------------- history
  function renderHistory(target, rows, withRestore) {
    target.textContent = "";
    if (!rows.length) { target.appendChild(el("li", { class: "none" }, "还没有通过工作台的修改记录。")); return; }
    for (const row of rows) {
      const li = el("li", { class: "kb-change", testid: "kb-change" });
      const head = el("div", { class: "kb-change-head" });
      head.append(el("strong", {}, row.staff), el("span", {}, ACTIONS[row.action] || row.action),
        el("span", {}, KIND_NAMES[row.kind] + "「" + row.entity + "」"), el("small", {}, when(row.at) + " · " + row.file));
      if (row.restored_from) head.appendChild(el("small", {}, "（恢复到第 " + row.restored_from + " 次修改之前）"));
      li.appendChild(head);
      li.appendChild(el("pre", { class: "kb-diff" }, row.diff || "（无差别）"));
      if (withRestore) {
        const label = row.action === "create" ? "撤销这次新建（删掉这个条目）" : "恢复到这次修改之前";
        const restore = el("button", { type: "button", testid: "kb-restore", class: "kb-restore" }, label);
        restore.dataset.label = label;
        restore.addEventListener("click", () => restoreTo(row, restore));
        li.appendChild(restore);
      } else {
        const open = el("button", { type: "button", class: "kb-open" }, "打开");
        open.addEventListener("click", () => openEntity(row.kind, row.entity));
        li.appendChild(open);
      }
      target.appendChild(li);
    }
  }

  async function loadHistory() {
    $("kb-history-title").textContent = "这个条目的修改记录";
    const { status, data } = await api("GET", "kb/history?kind=" + current.kind + "&id=" + encodeURIComponent(current.id));
    if (expired(status)) return;
    if (status !== 200) { $("kb-history").textContent = data.error || "读取失败"; return; }
    renderHistory($("kb-history"), data.history, true);
  }

  async function loadRecent() {
    $("kb-history-title").textContent = "最近的修改（所有条目）";
    const { status, data } = await api("GET", "kb/history");
    if (expired(status)) return;
    if (status === 200) renderHistory($("kb-history"), data.history, false);
  }

  async function restoreTo(row, button) {
    if (button.dataset.armed !== "1") {  // a second click confirms (no blocking dialog)
      button.dataset.armed = "1";
      button.textContent = "确定恢复到 " + row.staff + " 这次修改之前？会立即发布。再点一次确认";
      return;
    }
    button.dataset.armed = "";
    button.textContent = button.dataset.label;
    button.disabled = true;
    setResult("", "正在恢复…");
    const { status, data } = await api("POST", "kb/history/" + row.id + "/restore", { version: current.version });
    button.disabled = false;
    if (expired(status)) return;
    if (status === 200 && data.version === "absent") {  // a creation undone: the entry is gone
      current = null;
      $("kb-form").hidden = true;
      setResult("ok", data.message);
      loadCatalog();
      return;
    }
    if (status === 200) {
      await openEntity(current.kind, current.id);
      setResult("ok", data.message);
      loadCatalog();
      return;
    }
    setResult("error", data.error || "恢复失败", data.problems);
  }

  // ---------------------------------------------------------------- try it
  async function tryIt(event) {
    event.preventDefault();
    const q = $("kb-try-input").value.trim();
    const out = $("kb-try-results");
    out.textContent = "";
    if (!q) return;
    out.appendChild(el("p", { class: "hint" }, "查询中…（刚发布后第一次要等十几秒）"));
    const { status, data } = await api("GET", "kb/try?q=" + encodeURIComponent(q));
    if (expired(status)) return;
    out.textContent = "";
    if (status !== 200) { out.appendChild(el("p", { class: "error" }, data.error || "查询失败")); return; }
    out.appendChild(el("p", { class: "kb-verdict " + (VERDICTS[data.verdict.kind] || ""), testid: "kb-verdict" }, data.verdict.text));
    const table = el("table", { class: "kb-matches" });
    const head = el("tr");
    for (const h of ["回答", "得分", "意思相近", "字面相近", "最像的问法"]) head.appendChild(el("th", {}, h));
    table.appendChild(head);
    for (const m of data.matches) {
      const tr = el("tr", { testid: "kb-match" });
      const name = el("td");
      name.append(el("span", { class: "kb-kind" }, m.kind === "walk" ? "故障排查" : (KIND_NAMES[m.kind] || m.kind)), " " + m.title);
      if (m.kind === "topic") {
        const open = el("button", { type: "button", class: "kb-open" }, "编辑");
        open.addEventListener("click", () => openEntity("topic", m.id));
        name.append(" ", open);
      }
      tr.append(name, el("td", {}, m.score.toFixed(2)), el("td", {}, m.meaning.toFixed(2)),
        el("td", {}, m.words.toFixed(2)), el("td", {}, m.nearest));
      table.appendChild(tr);
    }
    out.appendChild(table);
  }

  $("kb-search").addEventListener("input", () => catalog && renderList());
  $("kb-kind").addEventListener("change", () => catalog && renderList());
  $("kb-form").addEventListener("submit", submit);
  $("kb-new").addEventListener("click", newEntity);
  $("kb-try").addEventListener("submit", tryIt);
  register("editor", { roles: ["editor", "admin"], onShow: loadCatalog });
})();
