// posbot staff console: log in, see conversations waiting for a person, hand them back;
// editors and admins also get 待学习, the learning queue (questions the bot could not answer,
// grouped, with the answers to teach it).
// The session cookie is HttpOnly; the CSRF token comes from /staff/api/login or /staff/api/me
// and goes with every state-changing request in the X-CSRF-Token header.
"use strict";
(function () {
  const POLL_MS = 5000;
  let csrf = "";
  let timer = null;
  const drafts = new Map();  // handoff id -> unsent reply, kept across the 5 s refreshes
  // handoff id -> [{text, reason}]: messages of ours that did not reach the merchant at once,
  // shown under the message in the transcript (the reason codes: bot/channels/delivery.py)
  const notes = new Map();
  const KEPT = "；商户下次发消息时会一并收到";
  const REASONS = {
    wechat_window_closed: "未送达：商户超过48小时未发消息，微信不允许主动推送" + KEPT,
    wechat_limit: "未送达：商户上次发消息后我们已主动推送太多条，微信暂不允许再推送" + KEPT,
    wechat_no_secret: "未送达：服务器没有配置微信 AppSecret（WECHAT_APP_SECRET），不能主动推送" + KEPT,
    wechat_error: "未送达：微信接口暂时出错" + KEPT,
    wechat_not_kept: "未送达，也没能保存待发（Redis 不可用）：请稍后重发，或电话联系商户",
    rest_poll: "已存入对话：商户的应用拉取新消息时会收到（REST 接口不能主动推送）",
    not_pushable: "已存入对话，但商户所在的渠道不能主动推送：请电话联系商户",
    unknown: "送达情况未知：渠道没有回报结果",
    not_accepted: "没有发出去：机器人服务没有响应，请稍后重试",
  };
  const KEPT_REASONS = ["wechat_window_closed", "wechat_limit", "wechat_no_secret", "wechat_error"];
  const CHANNELS = { web: "网页", wechat: "微信", rest: "REST 接口" };
  const $ = (id) => document.getElementById(id);

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    const res = await fetch("/staff/api/" + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try { data = await res.json(); } catch (e) { /* empty body */ }
    return { status: res.status, data };
  }

  function showLogin(message) {
    clearInterval(timer);
    for (const name of Object.keys(views)) $(name).hidden = true;
    $("views").hidden = true;
    $("logout").hidden = true;
    $("who").textContent = "";
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  function showInbox(me) {
    csrf = me.csrf;
    $("login").hidden = true;
    $("logout").hidden = false;
    $("who").textContent = me.name + "（" + me.role + "）";
    role = me.role;
    // a view's tab shows only for the roles it names (the server refuses the others too)
    let shown = 0;
    for (const [name, view] of Object.entries(views)) {
      const tab = $(name + "-tab");
      if (tab) tab.hidden = !view.roles.includes(role);
      if (view.roles.includes(role)) shown += 1;
    }
    $("views").hidden = shown < 2;
    showView("inbox");
    refresh();
    clearInterval(timer);
    timer = setInterval(refresh, POLL_MS);
  }

  function render(handoffs) {
    const list = $("handoffs");
    const template = $("handoff-template");
    const focused = document.activeElement && document.activeElement.classList.contains("agent-input")
      ? document.activeElement.closest(".handoff").dataset.handoffId : null;
    // the list is rebuilt every few seconds: keep where the agent scrolled each transcript to,
    // and follow the newest lines when they were at the bottom (or open it there)
    const scrolled = new Map();
    for (const box of list.querySelectorAll(".handoff")) {
      const t = box.querySelector(".transcript");
      scrolled.set(box.dataset.handoffId, {
        top: t.scrollTop, bottom: t.scrollTop + t.clientHeight >= t.scrollHeight - 4,
      });
    }
    list.textContent = "";
    $("empty").hidden = handoffs.length > 0;
    for (const h of handoffs) {
      const item = template.content.firstElementChild.cloneNode(true);
      item.dataset.handoffId = String(h.id);
      item.querySelector(".number").textContent = "登记号 " + h.id;
      item.querySelector(".brand").textContent = h.brand ? "品牌：" + h.brand : "";
      item.querySelector(".time").textContent = new Date(h.created_at).toLocaleString("zh-CN");
      item.querySelector(".conversation").textContent = "对话 " + h.conversation_id;
      item.querySelector(".channel").textContent = h.channel ? "渠道：" + (CHANNELS[h.channel] || h.channel) : "";
      const waiting = item.querySelector(".undelivered");
      waiting.hidden = !h.undelivered;
      waiting.textContent = h.undelivered
        ? "有 " + h.undelivered + " 条消息还没送到商户，商户下次发消息时会一并收到。" : "";
      const transcript = item.querySelector(".transcript");
      const agentLines = [];
      for (const line of h.transcript) {
        // button presses ("/greet", "/fees{…}") carry no words of the merchant's: the bot's
        // reply that follows shows what was chosen
        if (line.from === "merchant" && line.text.startsWith("/")) continue;
        const li = document.createElement("li");
        li.className = line.from;
        const who = {
          merchant: line.pressed ? "商户点了按钮：" : "商户：",
          bot: "机器人：",
          agent: "人工 " + (line.name || "") + "：",
        };
        li.textContent = (who[line.from] || "") + line.text;
        if (line.buttons && line.buttons.length) {
          const offered = document.createElement("span");
          offered.className = "offered";
          offered.textContent = "［按钮：" + line.buttons.join(" ｜ ") + "］";
          li.appendChild(document.createTextNode(" "));
          li.appendChild(offered);
        }
        if (line.from === "agent") agentLines.push({ li, text: line.text });
        transcript.appendChild(li);
      }
      attachNotes(h, agentLines);
      if (!h.transcript.length && h.question) {
        const li = document.createElement("li");
        li.className = "merchant";
        li.textContent = "商户：" + h.question;
        transcript.appendChild(li);
      }
      const button = item.querySelector(".release");
      const claimButton = item.querySelector(".claim");
      const form = item.querySelector(".reply");
      const input = item.querySelector(".agent-input");
      if (h.status === "waiting") {
        claimButton.hidden = false;
        claimButton.addEventListener("click", () => claim(h.id, item));
      } else if (h.status === "active") {
        item.querySelector(".owner").textContent = h.mine ? "由您接手" : "由 " + h.agent + " 接手";
        if (h.mine) {
          form.hidden = false;
          input.value = drafts.get(h.id) || "";
          input.addEventListener("input", () => drafts.set(h.id, input.value));
          input.addEventListener("keydown", (e) => {
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
          });
          form.addEventListener("submit", (e) => { e.preventDefault(); reply(h.id, item); });
        }
      }
      if (h.status === "no_agent") {
        // asked while nobody was on duty: the bot kept answering; call the merchant back
        item.querySelector(".brand").textContent += "（无人在线时登记，请回电跟进）";
        button.textContent = "标记已处理";
      }
      button.addEventListener("click", () => release(h.id, item));
      list.appendChild(item);
      const before = scrolled.get(String(h.id));
      transcript.scrollTop = before && !before.bottom ? before.top : transcript.scrollHeight;
      if (String(h.id) === focused && !form.hidden) input.focus();
    }
  }

  // Under each of our messages that did not reach the merchant at once: why, and what happens.
  // Notes are matched to the newest agent line with the same text, newest note first.
  function attachNotes(h, agentLines) {
    const list = notes.get(h.id) || [];
    let upto = agentLines.length;
    for (let i = list.length - 1; i >= 0; i--) {
      for (let j = upto - 1; j >= 0; j--) {
        if (agentLines[j].text !== list[i].text) continue;
        const note = document.createElement("small");
        note.className = "delivery";
        note.dataset.testid = "delivery-note";
        const arrived = KEPT_REASONS.includes(list[i].reason) && !h.undelivered;
        note.textContent = arrived ? "已随商户的下一条消息送达" : (REASONS[list[i].reason] || REASONS.unknown);
        agentLines[j].li.appendChild(note);
        upto = j;
        break;
      }
    }
  }

  function remember(id, text, data) {
    if (data.delivered || !text) return "";
    if (!notes.has(id)) notes.set(id, []);
    notes.get(id).push({ text, reason: data.reason });
    return REASONS[data.reason] || REASONS.unknown;
  }

  async function claim(id, item) {
    const { status, data } = await api("POST", "handoffs/" + id + "/claim", {});
    if (status === 401) return showLogin("登录已过期，请重新登录");
    const note = status === 200 ? remember(id, data.text, data) : "";
    item.querySelector(".status").textContent = status === 200
      ? (note ? "已接手；接入提示" + note : "已接手，商户会看到您已接入") : (data.error || "操作失败");
    refresh();
  }

  async function reply(id, item) {
    const input = item.querySelector(".agent-input");
    const text = input.value.trim();
    if (!text) return;
    const { status, data } = await api("POST", "handoffs/" + id + "/reply", { text });
    if (status === 401) return showLogin("登录已过期，请重新登录");
    if (status === 200) {
      drafts.delete(id); input.value = ""; remember(id, text, data); refresh();
    } else item.querySelector(".status").textContent = data.error || "发送失败";
  }

  async function refresh() {
    const { status, data } = await api("GET", "handoffs?status=open");
    if (status === 401) return showLogin("登录已过期，请重新登录");
    if (status !== 200) { $("inbox-error").textContent = data.error || "读取失败，稍后自动重试"; return; }
    $("inbox-error").textContent = "";
    $("updated").textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN");
    render(data.handoffs);
  }

  async function release(id, item) {
    const button = item.querySelector(".release");
    button.disabled = true;
    const { status, data } = await api("POST", "handoffs/" + id + "/release", {});
    if (status === 401) return showLogin("登录已过期，请重新登录");
    item.querySelector(".status").textContent = status === 200 ? "已交还给机器人" : (data.error || "操作失败");
    if (status === 200) setTimeout(refresh, 800); else button.disabled = false;
  }

  // ---------------------------------------------------------------- views
  // Each view is a <section id=NAME> with a tab <button id=NAME-tab> in <nav id=views>. Other
  // scripts of the console add theirs with posbotStaff.register(NAME, {roles, onShow}).
  const ALL = ["agent", "editor", "admin"];
  const views = {
    inbox: { roles: ALL, onShow: null },
    learning: { roles: ["editor", "admin"], onShow: () => loadLearning() },
  };
  let role = "";

  function showView(view) {
    for (const [name, v] of Object.entries(views)) {
      $(name).hidden = name !== view;
      const tab = $(name + "-tab");
      if (tab) tab.setAttribute("aria-selected", String(name === view));
    }
    if (views[view].onShow) views[view].onShow();
  }

  function register(name, { roles = ALL, onShow = null } = {}) {
    views[name] = { roles, onShow };
    $(name + "-tab").addEventListener("click", () => showView(name));
  }

  // ---------------------------------------------------------------- learning queue
  const KINDS = { topic: "话题", walk: "故障排查", code: "错误码", flow: "流程", decline: "婉拒", smalltalk: "寒暄" };
  const WHY = { fallback: "没听懂", clarify: "您是想问", decline: "婉拒", none_of_these: "都不是", unhelpful: "没帮助" };
  let answers = null;  // [{id, title, kind, intent, retrieval}], loaded once for the picker

  function why(reason) {
    const label = WHY[reason.code] || reason.code;
    return reason.code === "unhelpful" && reason.topic ? label + "（" + (reason.title || reason.topic) + "）" : label;
  }

  function answerLabel(a) {
    const kind = KINDS[a.kind] || a.kind || "";
    return a.title.startsWith(kind) ? a.title : kind + "｜" + a.title;
  }

  async function loadLearning() {
    $("learning-error").textContent = "";
    $("learning-summary").textContent = "读取中…";
    if (!answers) {
      const got = await api("GET", "learning/answers");
      if (got.status === 401) return showLogin("登录已过期，请重新登录");
      if (got.status === 200) answers = got.data.answers;
    }
    const { status, data } = await api("GET", "learning?days=" + $("learning-days").value);
    if (status === 401) return showLogin("登录已过期，请重新登录");
    $("learning-summary").textContent = "";
    if (status !== 200) { $("learning-error").textContent = data.error || "读取失败，请稍后重试"; return; }
    $("learning-updated").textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN");
    $("learning-summary").textContent = data.groups.length
      ? data.groups.length + " 组，共 " + data.questions + " 次提问" : "";
    $("learning-warnings").textContent = (data.warnings || []).join("；");
    renderGroups(data.groups);
  }

  function renderGroups(groups) {
    const list = $("learning-groups");
    list.textContent = "";
    $("learning-empty").hidden = groups.length > 0;
    for (const g of groups) list.appendChild(renderGroup(g));
  }

  function renderGroup(g) {
    const item = $("group-template").content.firstElementChild.cloneNode(true);
    let chosen = null;
    item.querySelector(".group-text").textContent = g.text;
    item.querySelector(".count").textContent = "× " + g.count;
    item.querySelector(".group-reasons").textContent = Object.entries(g.reasons)
      .map(([code, n]) => (WHY[code] || code) + " " + n).join(" · ");
    const examples = item.querySelector(".examples");
    for (const e of g.examples) {
      const li = document.createElement("li");
      const said = document.createElement("span");
      said.className = "said";
      said.textContent = e.text;
      const meta = document.createElement("small");
      meta.className = "example-meta";
      meta.textContent = e.reasons.map(why).join("、") + " · " +
        new Date(e.at).toLocaleString("zh-CN") + " · 对话 " + e.conversation_id;
      li.append(said, meta);
      examples.appendChild(li);
    }
    const boxes = item.querySelector(".texts");
    for (const text of g.texts) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      box.value = text;
      box.dataset.testid = "teach-text";
      label.append(box, document.createTextNode(" " + text));
      boxes.appendChild(label);
    }
    const teachButton = item.querySelector(".teach");
    const chosenLine = item.querySelector(".chosen");
    function choose(answer) {
      chosen = answer;
      chosenLine.textContent = "回答：" + answerLabel(answer) + (answer.retrieval ? "" : "（下次 make train 后生效）");
      teachButton.disabled = false;
      for (const b of item.querySelectorAll(".suggestion")) b.setAttribute("aria-pressed", String(b.dataset.answer === answer.id));
    }
    const suggestions = item.querySelector(".suggestions");
    for (const s of g.suggestions) {
      const button = document.createElement("button");
      button.className = "suggestion";
      button.dataset.testid = "suggestion";
      button.dataset.answer = s.id;
      button.setAttribute("aria-pressed", "false");
      button.textContent = answerLabel(s) + " " + s.score.toFixed(2);
      const full = (answers || []).find((a) => a.id === s.id);
      button.addEventListener("click", () => choose(full || { ...s, retrieval: true }));
      suggestions.appendChild(button);
    }
    if (!g.suggestions.length) suggestions.querySelector(".label").textContent = "没有推荐，请搜索回答：";
    const search = item.querySelector(".answer-search");
    const options = item.querySelector(".answer-options");
    search.addEventListener("input", () => {
      const q = search.value.trim().toLowerCase();
      options.textContent = "";
      options.hidden = !q;
      if (!q) return;
      const found = (answers || []).filter((a) => a.title.toLowerCase().includes(q) || a.id.toLowerCase().includes(q)
        || (KINDS[a.kind] || "").includes(q)).slice(0, 30);
      if (!found.length) {
        const li = document.createElement("li");
        li.className = "none";
        li.textContent = "没有找到，换个词试试";
        options.appendChild(li);
      }
      for (const a of found) {
        const li = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.testid = "answer-option";
        button.setAttribute("role", "option");
        button.textContent = answerLabel(a);
        button.title = a.id;
        button.addEventListener("click", () => { choose(a); options.hidden = true; search.value = ""; });
        li.appendChild(button);
        options.appendChild(li);
      }
    });
    const checked = () => [...item.querySelectorAll("[data-testid=teach-text]")].filter((b) => b.checked).map((b) => b.value);
    teachButton.addEventListener("click", () => {
      if (chosen) learn(item, "teach", { texts: checked(), answer: chosen.id });
    });
    item.querySelector(".ignore").addEventListener("click", () => learn(item, "ignore", { texts: checked() }));
    return item;
  }

  async function learn(item, action, body) {
    const result = item.querySelector(".result");
    result.className = "result";
    result.textContent = "";
    if (!body.texts.length) { result.textContent = "请至少勾选一个说法"; result.classList.add("error"); return; }
    const buttons = item.querySelectorAll(".actions button");
    for (const b of buttons) b.disabled = true;
    result.textContent = action === "teach" ? "正在检查并保存…" : "正在保存…";
    const { status, data } = await api("POST", "learning/" + action, body);
    if (status === 401) return showLogin("登录已过期，请重新登录");
    result.textContent = "";
    if (status === 200) {
      result.classList.add("ok");
      result.textContent = data.message;
      item.classList.add("done");
      return;
    }
    result.classList.add("error");
    const message = document.createElement("p");
    message.textContent = status === 400 && data.problems ? "内容检查没有通过，learned.yml 没有改动：" : (data.error || "操作失败");
    result.appendChild(message);
    if (data.problems) {
      const pre = document.createElement("pre");
      pre.dataset.testid = "lint-problems";
      pre.textContent = data.problems.join("\n");
      result.appendChild(pre);
    }
    for (const b of buttons) b.disabled = false;
  }

  $("inbox-tab").addEventListener("click", () => showView("inbox"));
  $("learning-tab").addEventListener("click", () => showView("learning"));
  // for the console's other scripts (loaded after this one): the API helper and view registry
  window.posbotStaff = { api, register, $, role: () => role };
  $("learning-refresh").addEventListener("click", loadLearning);
  $("learning-days").addEventListener("change", loadLearning);

  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const { status, data } = await api("POST", "login", {
      name: $("login-username").value, password: $("login-password").value,
    });
    $("login-password").value = "";
    if (status === 200) showInbox(data); else showLogin(data.error || "登录失败");
  });

  $("logout").addEventListener("click", async () => {
    await api("POST", "logout", {});
    showLogin("已退出登录");
  });

  // the other scripts are deferred too and run after this one: ask for the session after them
  window.addEventListener("DOMContentLoaded", () =>
    api("GET", "me").then(({ status, data }) => (status === 200 ? showInbox(data) : showLogin(""))));
})();
