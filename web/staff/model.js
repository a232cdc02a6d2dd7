// posbot staff console, 训练发布: retrain the intent model when its training data changed, check
// it on the held-out sets, load it into the bot without downtime (bot/channels/publish.py).
// Editors see the state; admins start a training.
"use strict";
(function () {
  const { api, register, $ } = window.posbotStaff;
  const POLL_MS = 3000;
  const RUNNING = ["training", "guard", "publishing"];
  const STATES = {
    idle: "还没有训练过",
    training: "正在训练",
    guard: "正在检查（留出测试集）",
    publishing: "正在发布到机器人",
    published: "已发布",
    partial: "只发布了一部分：机器人实例用的模型不一致",
    refused: "没有发布：新模型不如正在使用的",
    failed: "失败",
  };
  // One server of a publish (bot/training.py): servers are loaded one after the other.
  const INSTANCE = {
    waiting: "等待加载",
    loading: "正在加载新模型（照常回复商户）",
    loaded: "已加载新模型",
    failed: "没有加载",
    skipped: "没有发布（前面的实例失败，已停止）",
  };
  let timer = null;

  const when = (iso) => (iso ? new Date(iso).toLocaleString("zh-CN") : "—");
  const accuracy = (g) => (g ? (g.accuracy * 100).toFixed(1) + "%（" + g.correct + "/" + g.examples + "）" : "—");

  function line(parent, label, value, className) {
    const p = document.createElement("p");
    if (className) p.className = className;
    const b = document.createElement("strong");
    b.textContent = label + "：";
    p.append(b, document.createTextNode(value));
    parent.appendChild(p);
    return p;
  }

  function render(s) {
    const box = $("model-state");
    box.textContent = "";
    box.dataset.state = s.state;
    line(box, "状态", STATES[s.state] || s.state, "state state-" + s.state);
    if (s.message) line(box, "说明", s.message);
    if (s.started) line(box, "这次训练", when(s.started) + " 由 " + (s.by || "?") + " 开始"
      + (s.finished ? "，" + when(s.finished) + " 结束" : "") + (s.model ? "，模型文件 " + s.model : ""));
    if (s.changed && s.changed.length) line(box, "这次训练的改动", s.changed.join("、"));
    if (s.guard) line(box, "意图准确率（留出测试集）", "新模型 " + accuracy(s.guard.new)
      + "，原来的模型 " + accuracy(s.guard.serving));
    for (const i of s.instances || []) {
      const label = INSTANCE[i.state] || (i.ok ? INSTANCE.loaded : INSTANCE.failed);
      line(box, "发布到 " + i.url, label + (i.seconds ? "，用时 " + i.seconds + " 秒" : "")
        + (i.error ? "：" + i.error : ""), i.ok ? "ok" : i.state === "failed" ? "bad" : "");
    }
    for (const v of s.servers || []) {
      line(box, "机器人 " + v.url + " 现在用", v.error ? "（" + v.error + "）" : (v.model_file || "没有模型"),
        v.error ? "bad" : "");
    }
    if (s.mixed) line(box, "注意", "各机器人实例用的模型不一致，请重试发布或重启落后的实例", "bad");
    let retry = $("model-retry");
    if (!retry) {
      retry = document.createElement("button");
      retry.id = "model-retry";
      retry.type = "button";
      retry.dataset.testid = "model-retry";
      retry.textContent = "重试发布";
      retry.addEventListener("click", republish);
      $("model-train").after(retry);
    }
    retry.hidden = !s.can_retry;
    retry.disabled = RUNNING.includes(s.state);
    line(box, "正在使用的模型", s.serving.exists
      ? s.serving.file + "（" + when(s.serving.trained_at) + " 训练）" : "没有（" + s.serving.file + " 不存在）");
    line(box, "自那以后改动的训练数据", s.pending_count
      ? s.pending_count + " 个文件：" + s.pending.join("、") + (s.pending_count > s.pending.length ? "……" : "")
      : "没有，不需要重新训练");
    const running = RUNNING.includes(s.state);
    const button = $("model-train");
    button.hidden = !s.can_train;
    button.disabled = running || !s.pending_count;
    button.title = running ? "训练进行中" : s.pending_count ? "" : "训练数据没有变化";
    $("model-log").textContent = (s.log || []).join("\n");
    $("model-updated").textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN");
    clearTimeout(timer);
    if (running && !$("model").hidden) timer = setTimeout(load, POLL_MS);
  }

  async function load() {
    const { status, data } = await api("GET", "model");
    if (status !== 200) {
      $("model-result").textContent = data.error || "状态暂时读不到（" + status + "）";
      $("model-result").className = "result error";
      return;
    }
    render(data);
  }

  async function train() {
    const button = $("model-train");
    button.disabled = true;
    const result = $("model-result");
    const { status, data } = await api("POST", "model/train", {});
    result.className = "result " + (status === 202 || status === 200 ? "ok" : "error");
    result.textContent = data.message || data.error || "出错了（" + status + "）";
    load();
  }

  async function republish() {
    $("model-retry").disabled = true;
    const result = $("model-result");
    const { status, data } = await api("POST", "model/retry", {});
    result.className = "result " + (status === 202 ? "ok" : "error");
    result.textContent = data.message || data.error || "出错了（" + status + "）";
    load();
  }

  register("model", { roles: ["editor", "admin"], onShow: load });
  $("model-train").addEventListener("click", train);
  $("model-refresh").addEventListener("click", load);
})();
