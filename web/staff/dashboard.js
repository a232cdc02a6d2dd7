// posbot staff console, 统计 (editors and admins): per day, what merchants asked and how the bot
// did, from GET /staff/api/dashboard?days=N (bot/channels/dashboard.py). Charts by Chart.js
// (served by the bot at /staff/vendor/chart.umd.min.js); the same figures are in the tables, so
// the view works without it.
"use strict";
(function () {
  const { api, register, $ } = window.posbotStaff;
  const charts = {};
  const OUTCOMES = [
    ["answered", "答上", "#2f7d32"],
    ["clarify", "“您是想问”", "#e0a100"],
    ["fallback", "没听懂", "#b00020"],
    ["declined", "婉拒（超出范围）", "#7b8794"],
  ];
  const PEOPLE = [
    ["conversations", "对话", "#1f5fa8"],
    ["handoffs", "转人工", "#8e44ad"],
    ["helpful", "有帮助", "#2f7d32"],
    ["unhelpful", "没帮助", "#b00020"],
    ["none_of_these", "都不是", "#e0a100"],
  ];
  const REASONS = { fallback: "没听懂", clarify: "您是想问", decline: "婉拒" };

  const percent = (rate) => (rate === null || rate === undefined ? "—" : (rate * 100).toFixed(1) + "%");

  function totals(body) {
    const t = body.totals;
    const r = body.rates;
    const items = [
      ["对话", String(t.conversations)],
      ["商户消息", t.messages + "（另有按钮 " + t.buttons + "）"],
      ["答上", t.answered + "（" + percent(r.answered) + "）"],
      ["没听懂", t.fallback + "（" + percent(r.fallback) + "）"],
      ["“您是想问”", t.clarify + "（" + percent(r.clarify) + "）"],
      ["婉拒", t.declined + "（" + percent(r.declined) + "）"],
      ["转人工", t.handoffs + "（占对话 " + percent(r.handoff) + "；无人在线 " + t.no_agent + "）"],
      ["评价", "有帮助 " + t.helpful + " · 没帮助 " + t.unhelpful + " · 都不是 " + t.none_of_these
        + "（好评率 " + percent(r.helpful) + "）"],
    ];
    const list = $("dashboard-totals");
    list.textContent = "";
    for (const [label, value] of items) {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = label;
      dd.textContent = value;
      div.append(dt, dd);
      list.appendChild(div);
    }
  }

  function table(body) {
    const rows = [["日期", ...body.dates.map((d) => d.slice(5))]];
    for (const [key, label] of [["conversations", "对话"], ["messages", "商户消息"], ["buttons", "按钮"],
      ...OUTCOMES.map(([k, l]) => [k, l]), ["handoffs", "转人工"], ["no_agent", "无人在线"],
      ["helpful", "有帮助"], ["unhelpful", "没帮助"], ["none_of_these", "都不是"]]) {
      rows.push([label, ...body.series[key].map(String)]);
    }
    const t = $("dashboard-table");
    t.textContent = "";
    rows.forEach((row, i) => {
      const tr = document.createElement("tr");
      row.forEach((cell, j) => {
        const td = document.createElement(i === 0 || j === 0 ? "th" : "td");
        td.textContent = cell;
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
  }

  function lists(body) {
    const topics = $("dashboard-topics");
    topics.textContent = "";
    for (const topic of body.topics) {
      const li = document.createElement("li");
      li.textContent = (topic.title || topic.id) + " — " + topic.count + " 次";
      topics.appendChild(li);
    }
    if (!body.topics.length) topics.appendChild(Object.assign(document.createElement("li"),
      { textContent: "（这段时间没有回答过话题）", className: "none" }));
    const unanswered = $("dashboard-unanswered");
    unanswered.textContent = "";
    for (const item of body.unanswered) {
      const li = document.createElement("li");
      const why = Object.entries(item.reasons).map(([k, n]) => (REASONS[k] || k) + " " + n).join("，");
      li.textContent = item.text + " — " + item.count + " 次，" + item.conversations + " 个对话（" + why + "）";
      unanswered.appendChild(li);
    }
    if (!body.unanswered.length) unanswered.appendChild(Object.assign(document.createElement("li"),
      { textContent: "（没有）", className: "none" }));
  }

  function draw(id, type, labels, datasets, stacked) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new window.Chart($(id), {
      type,
      data: { labels, datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { stacked }, y: { stacked, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  function chartsFor(body) {
    const haveChart = typeof window.Chart === "function";
    $("dashboard-nochart").hidden = haveChart;
    if (!haveChart) return;
    const labels = body.dates.map((d) => d.slice(5));
    draw("dashboard-chart", "bar", labels, OUTCOMES.map(([key, label, color]) => (
      { label, data: body.series[key], backgroundColor: color })), true);
    draw("dashboard-chart-people", "line", labels, PEOPLE.map(([key, label, color]) => (
      { label, data: body.series[key], borderColor: color, backgroundColor: color, tension: 0 })), false);
  }

  async function load() {
    $("dashboard-error").textContent = "";
    const days = $("dashboard-days").value;
    const { status, data } = await api("GET", "dashboard?days=" + encodeURIComponent(days));
    if (status !== 200) {
      $("dashboard-error").textContent = data.error || "统计暂时打不开（" + status + "），请稍后再试";
      return;
    }
    $("dashboard-warnings").textContent = (data.warnings || []).join("；");
    $("dashboard-updated").textContent = data.since + " 至 " + data.until + "，" + data.timezone;
    totals(data);
    table(data);
    lists(data);
    chartsFor(data);
  }

  register("dashboard", { roles: ["editor", "admin"], onShow: load });
  $("dashboard-days").addEventListener("change", load);
  $("dashboard-refresh").addEventListener("click", load);
})();
