/*!
 * posbot website chat widget — plain JavaScript, no framework, no build step.
 *
 * Embed with one tag (see docs/widget.md):
 *   <script src="https://bot.example.com/webhooks/web/widget.js"
 *           data-server="https://bot.example.com" defer></script>
 *
 * Talks to Rasa's socket.io channel (bot/channels/web.py): session_request/session_confirm,
 * user_uttered {message, session_id, metadata}, bot_uttered {text, quick_replies|buttons,
 * attachment} and the custom {"posbot": {"handoff": "started"|"released"}} signal.
 *
 * Security rule of this file: message text is only ever put into the page with textContent /
 * text nodes; links and images are built as elements from http(s) URLs only.
 */
(function () {
  "use strict";

  // Every word the merchant sees. A site can override one with data-text-<key> on the script
  // tag, e.g. data-text-title="收银帮助" (key in kebab-case: data-text-handoff-started).
  var TEXT = {
    title: "在线客服",
    subtitle: "POS 商户服务 · 智能助手",
    launcherOpen: "打开在线客服",
    launcherClose: "关闭在线客服",
    close: "关闭对话窗口",
    log: "对话记录",
    inputLabel: "输入您的问题",
    placeholder: "请描述您遇到的问题…",
    send: "发送",
    sendLabel: "发送消息",
    botSays: "客服：",
    agentSays: "人工客服",
    userSays: "我：",
    typing: "客服正在输入…",
    quickReplies: "快捷回复",
    pastChoices: "当时的选项（已过期）",
    image: "客服发送的图片",
    opensNewWindow: "（在新窗口打开）",
    connecting: "正在连接客服…",
    connectFailed: "暂时无法连接客服，正在重试…",
    disconnected: "连接已断开，正在重连…",
    reconnected: "连接已恢复",
    unavailable: "在线客服暂时不可用，请稍后再试或拨打客服热线。",
    handoffStarted: "已为您转接人工客服，请稍候…",
    handoffServing: "人工客服正在为您服务",
    handoffReleased: "人工客服已结束本次服务",
    unread: "条新消息",
  };

  var HISTORY_LIMIT = 200;
  var TYPING_TIMEOUT_MS = 30000;
  var RECONNECTED_NOTICE_MS = 3000;

  if (window.posbotWidget) {
    return; // the tag was included twice: one widget is enough
  }

  var script = document.currentScript || findOwnScript();
  var config = readConfig(script);

  // ---------------------------------------------------------------- storage
  // localStorage keeps the Rasa session id (the conversation) across visits and tabs;
  // sessionStorage keeps the rendered history and open state of this tab across reloads and
  // page changes, so two tabs of one conversation never overwrite each other's history.
  var store = {
    get: function (area, key) {
      try {
        return window[area].getItem(config.storagePrefix + ":" + key);
      } catch (e) {
        return null; // storage disabled (privacy mode, blocked cookies): run without it
      }
    },
    set: function (area, key, value) {
      try {
        if (value === null) {
          window[area].removeItem(config.storagePrefix + ":" + key);
        } else {
          window[area].setItem(config.storagePrefix + ":" + key, value);
        }
      } catch (e) {
        /* quota or disabled storage: the conversation still works, it just won't survive */
      }
    },
  };

  var state = {
    sessionId: store.get("localStorage", "session_id"),
    confirmed: false, // session_confirm received on the current connection
    everConnected: false,
    lostConnection: false,
    history: [],
    handoff: false,
    agent: null, // name of the person who answered during this handoff ("" if unnamed)
    open: false,
    unread: 0,
    pending: [], // messages typed while not (yet) connected
    greetPending: false,
    socket: null,
    socketLoading: null,
    typingTimer: null,
    noticeTimer: null,
  };
  var ui = null;

  window.posbotWidget = {
    open: function () {
      if (ui) {
        openPanel(true);
      }
    },
    close: function () {
      if (ui) {
        closePanel();
      }
    },
    /** Start a new conversation (new Rasa session id, empty history). */
    reset: function () {
      if (ui) {
        resetConversation();
      }
    },
    get sessionId() {
      return state.sessionId;
    },
    get socket() {
      return state.socket;
    },
    text: TEXT,
  };

  function init() {
    loadHistory();
    ui = buildUi();
    document.body.appendChild(ui.root);
    loadStylesheet();
    renderHistory();
    renderHandoff();
    if (store.get("sessionStorage", "open") === "1" || config.openOnLoad) {
      openPanel(false);
    } else if (state.sessionId && state.history.length) {
      connect(); // an ongoing conversation: listen for answers while the panel is closed
    }
  }

  // ================================================================ config
  function findOwnScript() {
    var scripts = document.getElementsByTagName("script");
    for (var i = scripts.length - 1; i >= 0; i--) {
      if (/\/widget\.js(\?|#|$)/.test(scripts[i].src)) {
        return scripts[i];
      }
    }
    return null;
  }

  function readConfig(tag) {
    var data = (tag && tag.dataset) || {};
    var src = (tag && tag.src) || window.location.href;
    var assetsBase = new URL(".", src).href;
    Object.keys(data).forEach(function (key) {
      // data-text-handoff-started -> dataset.textHandoffStarted -> TEXT.handoffStarted
      if (key.length > 4 && key.indexOf("text") === 0) {
        var name = key.charAt(4).toLowerCase() + key.slice(5);
        if (Object.prototype.hasOwnProperty.call(TEXT, name)) {
          TEXT[name] = data[key];
        }
      }
    });
    return {
      server: (data.server || new URL(src).origin).replace(/\/+$/, ""),
      socketPath: data.socketPath || "/socket.io",
      assetsBase: assetsBase,
      greet: data.greet === undefined ? "/greet" : data.greet,
      storagePrefix: data.storageKey || "posbot",
      metadataKey: data.metadataKey || "metadata",
      openOnLoad: data.open === "true",
    };
  }

  // ================================================================ UI
  function el(tag, className, attrs) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    Object.keys(attrs || {}).forEach(function (name) {
      node.setAttribute(name, attrs[name]);
    });
    return node;
  }

  function svgIcon(pathD) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", pathD);
    svg.appendChild(path);
    return svg;
  }

  function buildUi() {
    var root = el("div", "posbot", { id: "posbot-widget", "data-state": "closed" });

    var launcher = el("button", "posbot-launcher", {
      type: "button",
      "data-testid": "launcher",
      "aria-label": TEXT.launcherOpen,
      "aria-expanded": "false",
      "aria-controls": "posbot-panel",
    });
    launcher.appendChild(
      svgIcon(
        "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z"
      )
    );
    var badge = el("span", "posbot-badge", { "data-testid": "unread", hidden: "" });
    launcher.appendChild(badge);

    var panel = el("section", "posbot-panel", {
      id: "posbot-panel",
      role: "dialog",
      "aria-modal": "false",
      "aria-labelledby": "posbot-title",
      "data-testid": "panel",
      hidden: "",
    });

    var header = el("header", "posbot-header");
    var titles = el("div", "posbot-titles");
    var title = el("h2", "posbot-title", { id: "posbot-title" });
    title.textContent = TEXT.title;
    var subtitle = el("p", "posbot-subtitle");
    subtitle.textContent = TEXT.subtitle;
    titles.appendChild(title);
    titles.appendChild(subtitle);
    var closeBtn = el("button", "posbot-close", {
      type: "button",
      "aria-label": TEXT.close,
      "data-testid": "close",
    });
    closeBtn.appendChild(svgIcon("M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z"));
    header.appendChild(titles);
    header.appendChild(closeBtn);

    var handoff = el("div", "posbot-handoff", {
      role: "status",
      "data-testid": "handoff-banner",
      hidden: "",
    });
    handoff.textContent = TEXT.handoffStarted;

    var notice = el("div", "posbot-notice", {
      role: "status",
      "aria-live": "polite",
      "data-testid": "connection-notice",
      hidden: "",
    });

    var log = el("div", "posbot-log", {
      role: "log",
      "aria-live": "polite",
      "aria-label": TEXT.log,
      "data-testid": "log",
      tabindex: "0",
    });

    var typing = el("div", "posbot-typing", {
      "data-testid": "typing",
      role: "status",
      hidden: "",
    });
    var dots = el("span", "posbot-dots", { "aria-hidden": "true" });
    dots.appendChild(el("span"));
    dots.appendChild(el("span"));
    dots.appendChild(el("span"));
    var typingText = el("span", "posbot-sr-only");
    typingText.textContent = TEXT.typing;
    typing.appendChild(dots);
    typing.appendChild(typingText);

    var form = el("form", "posbot-composer", { novalidate: "" });
    var label = el("label", "posbot-sr-only", { for: "posbot-input" });
    label.textContent = TEXT.inputLabel;
    var input = el("textarea", "posbot-input", {
      id: "posbot-input",
      rows: "1",
      placeholder: TEXT.placeholder,
      "data-testid": "input",
      autocomplete: "off",
      enterkeyhint: "send",
    });
    var send = el("button", "posbot-send", {
      type: "submit",
      "data-testid": "send",
      "aria-label": TEXT.sendLabel,
    });
    send.textContent = TEXT.send;
    form.appendChild(label);
    form.appendChild(input);
    form.appendChild(send);

    panel.appendChild(header);
    panel.appendChild(handoff);
    panel.appendChild(notice);
    panel.appendChild(log);
    panel.appendChild(typing);
    panel.appendChild(form);
    root.appendChild(panel);
    root.appendChild(launcher);

    launcher.addEventListener("click", function () {
      if (state.open) {
        closePanel();
      } else {
        openPanel(true);
      }
    });
    closeBtn.addEventListener("click", closePanel);
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape" || event.key === "Esc") {
        event.preventDefault();
        closePanel();
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      submitInput();
    });
    input.addEventListener("keydown", function (event) {
      // Enter sends, Shift+Enter is a new line. While a Chinese IME is composing, Enter picks
      // the candidate (isComposing / keyCode 229) and must not send a half-typed message.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        submitInput();
      }
    });
    input.addEventListener("input", autosize);

    return {
      root: root,
      launcher: launcher,
      badge: badge,
      panel: panel,
      handoff: handoff,
      notice: notice,
      log: log,
      typing: typing,
      input: input,
      send: send,
    };
  }

  function loadStylesheet() {
    var href = new URL("widget.css", config.assetsBase).href;
    var links = document.querySelectorAll('link[rel="stylesheet"]');
    for (var i = 0; i < links.length; i++) {
      if (links[i].href === href) {
        return;
      }
    }
    var link = el("link", "", { rel: "stylesheet", href: href });
    (document.head || document.documentElement).appendChild(link);
  }

  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = Math.min(ui.input.scrollHeight, 120) + "px";
  }

  function openPanel(focusInput) {
    state.open = true;
    ui.panel.hidden = false;
    ui.root.setAttribute("data-state", "open");
    ui.launcher.setAttribute("aria-expanded", "true");
    ui.launcher.setAttribute("aria-label", TEXT.launcherClose);
    state.unread = 0;
    renderUnread();
    store.set("sessionStorage", "open", "1");
    scrollToEnd();
    if (focusInput) {
      ui.input.focus();
    }
    if (!state.history.length && config.greet && !state.greetPending) {
      // A new conversation: let the bot say its own welcome (with its quick replies).
      state.greetPending = true;
      queueMessage(config.greet);
    }
    connect();
  }

  function closePanel() {
    if (!state.open) {
      return;
    }
    state.open = false;
    ui.panel.hidden = true;
    ui.root.setAttribute("data-state", "closed");
    ui.launcher.setAttribute("aria-expanded", "false");
    ui.launcher.setAttribute("aria-label", TEXT.launcherOpen);
    store.set("sessionStorage", "open", null);
    ui.launcher.focus();
  }

  function renderUnread() {
    ui.badge.hidden = state.unread === 0;
    ui.badge.textContent = state.unread > 99 ? "99+" : String(state.unread);
    ui.launcher.setAttribute(
      "aria-label",
      state.open ? TEXT.launcherClose : TEXT.launcherOpen + (state.unread ? "，" + state.unread + TEXT.unread : "")
    );
  }

  function scrollToEnd() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function showNotice(text, autoHideMs) {
    clearTimeout(state.noticeTimer);
    ui.notice.textContent = text;
    ui.notice.hidden = false;
    ui.notice.setAttribute("data-kind", autoHideMs ? "ok" : "warn");
    if (autoHideMs) {
      state.noticeTimer = setTimeout(function () {
        ui.notice.hidden = true;
      }, autoHideMs);
    }
  }

  function hideNotice() {
    clearTimeout(state.noticeTimer);
    ui.notice.hidden = true;
  }

  function showTyping() {
    ui.typing.hidden = false;
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(hideTyping, TYPING_TIMEOUT_MS);
    scrollToEnd();
  }

  function hideTyping() {
    clearTimeout(state.typingTimer);
    ui.typing.hidden = true;
  }

  // ================================================================ messages
  // Bare http(s) URLs end before whitespace, quotes, angle brackets and CJK text/punctuation;
  // Markdown links [label](https://...) are what Rasa responses usually contain.
  var LINK_PATTERN =
    /\[([^\]\n]{1,300})\]\((https?:\/\/[^\s()]+)\)|(https?:\/\/[^\s<>"'\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]+)/gi;

  function safeUrl(value) {
    try {
      var url = new URL(String(value), window.location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function makeLink(href, label) {
    var a = el("a", "posbot-link", { target: "_blank", rel: "noopener noreferrer" });
    a.href = href;
    a.textContent = label;
    // The label says where it goes; the hint says it leaves the page (screen readers only, so
    // the bubble's text stays exactly what the bot sent).
    a.setAttribute("aria-label", label + TEXT.opensNewWindow);
    return a;
  }

  /** Append text with clickable links; everything else stays a text node (never HTML). */
  function appendRichText(container, text) {
    var last = 0;
    var match;
    LINK_PATTERN.lastIndex = 0;
    while ((match = LINK_PATTERN.exec(text)) !== null) {
      var raw = match[0];
      var label = match[1];
      var href = match[2] || match[3];
      var trailing = "";
      if (!label) {
        // "见 https://x.example/a." -> the final full stop is not part of the link
        var cut = /[.,;:!?)\]}'"]+$/.exec(href);
        if (cut) {
          trailing = cut[0];
          href = href.slice(0, -trailing.length);
          raw = href;
        }
      }
      var url = safeUrl(href);
      if (match.index > last) {
        container.appendChild(document.createTextNode(text.slice(last, match.index)));
      }
      container.appendChild(url ? makeLink(url, label || href) : document.createTextNode(raw));
      if (trailing) {
        container.appendChild(document.createTextNode(trailing));
      }
      last = match.index + match[0].length;
    }
    if (last < text.length) {
      container.appendChild(document.createTextNode(text.slice(last)));
    }
  }

  function speakerPrefix(text) {
    var span = el("span", "posbot-sr-only");
    span.textContent = text;
    return span;
  }

  function renderItem(item) {
    var row;
    if (item.type === "system") {
      row = el("div", "posbot-system", { "data-testid": "system-message" });
      row.textContent = item.text;
      ui.log.appendChild(row);
      return;
    }
    if (item.type === "agent") {
      // A person answering through the staff console: named, and styled apart from the bot.
      row = el("div", "posbot-row posbot-row--agent");
      var agentBubble = el("div", "posbot-bubble posbot-bubble--agent", {
        "data-testid": "agent-message",
      });
      var who = el("div", "posbot-agent-name");
      who.textContent = TEXT.agentSays + (item.name ? " " + item.name : "");
      agentBubble.appendChild(who);
      agentBubble.appendChild(document.createTextNode(item.text));
      row.appendChild(agentBubble);
      ui.log.appendChild(row);
      return;
    }
    var isUser = item.type === "user";
    row = el("div", "posbot-row posbot-row--" + (isUser ? "user" : "bot"));
    var bubble = el("div", "posbot-bubble posbot-bubble--" + (isUser ? "user" : "bot"), {
      "data-testid": isUser ? "user-message" : "bot-message",
    });
    row.appendChild(speakerPrefix(isUser ? TEXT.userSays : TEXT.botSays));
    if (item.image) {
      var src = safeUrl(item.image);
      if (!src) {
        return;
      }
      var img = el("img", "posbot-image", { alt: item.alt || TEXT.image, loading: "lazy" });
      img.src = src;
      img.addEventListener("load", scrollToEnd);
      bubble.appendChild(img);
    } else if (isUser) {
      bubble.appendChild(document.createTextNode(item.text));
    } else {
      appendRichText(bubble, item.text);
    }
    if (item.text || item.image) {
      row.appendChild(bubble);
      ui.log.appendChild(row);
    }
    if (item.buttons && item.buttons.length) {
      ui.log.appendChild(item.used ? renderPastChoices(item) : renderQuickReplies(item));
    }
  }

  function renderPastChoices(item) {
    // What was offered stays readable ("您可能还想了解：" is not left hanging), but can no
    // longer be pressed: it would answer a question the bot is no longer asking.
    var group = el("div", "posbot-past-choices", {
      role: "note",
      "aria-label": TEXT.pastChoices,
      "data-testid": "past-choices",
    });
    item.buttons.forEach(function (button) {
      var chip = el("span", "posbot-past-choice");
      chip.textContent = button.title;
      group.appendChild(chip);
    });
    return group;
  }

  function renderQuickReplies(item) {
    var group = el("div", "posbot-quick-replies", { role: "group", "aria-label": TEXT.quickReplies });
    item.buttons.forEach(function (button) {
      var b = el("button", "posbot-quick-reply", { type: "button", "data-testid": "quick-reply" });
      b.textContent = button.title;
      b.addEventListener("click", function () {
        sendUserMessage(button.payload, button.title);
      });
      group.appendChild(b);
    });
    return group;
  }

  function renderHistory() {
    ui.log.textContent = "";
    state.history.forEach(renderItem);
    scrollToEnd();
  }

  function addItem(item) {
    state.history.push(item);
    if (state.history.length > HISTORY_LIMIT) {
      state.history.splice(0, state.history.length - HISTORY_LIMIT);
    }
    saveHistory();
    renderItem(item);
    scrollToEnd();
  }

  function retireQuickReplies() {
    // Old quick replies would answer a question the bot is no longer asking: remove them.
    var changed = false;
    state.history.forEach(function (item) {
      if (item.buttons && item.buttons.length && !item.used) {
        item.used = true;
        changed = true;
      }
    });
    var groups = ui.log.querySelectorAll(".posbot-quick-replies");
    for (var i = 0; i < groups.length; i++) {
      var titles = Array.prototype.map.call(groups[i].querySelectorAll("button"), function (b) {
        return { title: b.textContent };
      });
      groups[i].parentNode.replaceChild(renderPastChoices({ buttons: titles }), groups[i]);
    }
    if (changed) {
      saveHistory();
    }
  }

  function renderHandoff() {
    ui.handoff.hidden = !state.handoff;
    var serving = state.handoff && state.agent !== null;
    ui.handoff.textContent = serving
      ? TEXT.handoffServing + (state.agent ? "（" + state.agent + "）" : "")
      : TEXT.handoffStarted;
    ui.root.setAttribute("data-handoff", state.handoff ? "started" : "released");
  }

  function setHandoff(started) {
    if (started === state.handoff) {
      return;
    }
    var served = state.agent !== null;
    state.handoff = started;
    state.agent = null;
    renderHandoff();
    if (!started && served) {
      // a divider after a person's part; the bot's own words (released, cancelled or timed
      // out) follow it from the server
      addItem({ type: "system", text: TEXT.handoffReleased });
    }
    saveHistory();
  }

  function normaliseButtons(list) {
    if (!Array.isArray(list)) {
      return [];
    }
    return list
      .filter(function (b) {
        return b && typeof b.title === "string" && b.title.trim();
      })
      .map(function (b) {
        var payload = typeof b.payload === "string" && b.payload ? b.payload : b.title;
        return { title: b.title, payload: payload };
      });
  }

  function posbotSignal(data) {
    // SocketIOOutput of bot/channels/web.py emits the custom JSON itself; other shapes are
    // what the REST channel ("custom") or rasa-webchat style ("data") would produce.
    var candidates = [data, data.custom, data.data];
    for (var i = 0; i < candidates.length; i++) {
      var c = candidates[i];
      if (c && typeof c === "object" && c.posbot && typeof c.posbot === "object") {
        return c.posbot;
      }
    }
    return null;
  }

  function onBotUttered(data) {
    if (typeof data === "string") {
      data = { text: data };
    }
    if (!data || typeof data !== "object") {
      return;
    }
    hideTyping();
    var signal = posbotSignal(data);
    if (signal && (signal.handoff === "started" || signal.handoff === "released")) {
      setHandoff(signal.handoff === "started");
    }
    var agentMessage = signal && signal.agent_message;
    if (agentMessage && typeof agentMessage.text === "string" && agentMessage.text.trim()) {
      addItem({ type: "agent", name: String(agentMessage.name || ""), text: agentMessage.text });
      if (state.handoff && state.agent !== String(agentMessage.name || "")) {
        state.agent = String(agentMessage.name || "");
        renderHandoff();
        saveHistory();
      }
      if (!state.open) {
        state.unread += 1;
        renderUnread();
      }
      return;
    }
    var text = typeof data.text === "string" ? data.text : "";
    var buttons = normaliseButtons(data.quick_replies || data.buttons);
    var rendered = false;
    if (text.trim() || buttons.length) {
      addItem({ type: "bot", text: text, buttons: buttons });
      rendered = true;
    }
    var attachment = data.attachment;
    var image = null;
    if (attachment && attachment.type === "image" && attachment.payload) {
      image = attachment.payload.src || attachment.payload.url;
    } else if (typeof data.image === "string") {
      image = data.image;
    }
    if (image && safeUrl(image)) {
      addItem({ type: "bot", image: image });
      rendered = true;
    }
    if (rendered && !state.open) {
      state.unread += 1;
      renderUnread();
    }
  }

  function submitInput() {
    var text = ui.input.value;
    if (!text.trim()) {
      ui.input.focus();
      return; // nothing to send
    }
    ui.input.value = "";
    autosize();
    sendUserMessage(text, text);
    ui.input.focus();
  }

  /** Show `shown` as the user's bubble and send `payload` (a quick reply's intent) to Rasa. */
  function sendUserMessage(payload, shown) {
    retireQuickReplies();
    addItem({ type: "user", text: shown });
    queueMessage(payload);
    connect();
  }

  function queueMessage(text) {
    state.pending.push(text);
    flushPending();
  }

  function flushPending() {
    var socket = state.socket;
    if (!socket || !socket.connected || !state.confirmed) {
      return; // sent after session_confirm, so the answer comes back to this socket's room
    }
    if (!state.pending.length) {
      return;
    }
    while (state.pending.length) {
      var payload = { message: state.pending.shift(), session_id: state.sessionId };
      payload[config.metadataKey] = { channel: "web", page: window.location.pathname };
      socket.emit("user_uttered", payload);
    }
    showTyping(); // until the bot's answer arrives
  }

  // ================================================================ persistence
  function loadHistory() {
    var raw = store.get("sessionStorage", "history");
    if (!raw) {
      return;
    }
    try {
      var saved = JSON.parse(raw);
      if (saved && saved.sessionId === state.sessionId && Array.isArray(saved.items)) {
        state.history = saved.items.filter(function (item) {
          return item && typeof item === "object" && typeof item.type === "string";
        });
        state.handoff = saved.handoff === true;
        state.agent = state.handoff && typeof saved.agent === "string" ? saved.agent : null;
      }
    } catch (e) {
      /* corrupt entry: start with an empty log */
    }
  }

  function saveHistory() {
    store.set(
      "sessionStorage",
      "history",
      JSON.stringify({
        sessionId: state.sessionId,
        items: state.history,
        handoff: state.handoff,
        agent: state.agent,
      })
    );
  }

  function resetConversation() {
    store.set("localStorage", "session_id", null);
    store.set("sessionStorage", "history", null);
    state.sessionId = null;
    state.history = [];
    state.handoff = false;
    state.agent = null;
    state.pending = [];
    state.greetPending = false;
    renderHistory();
    renderHandoff();
    hideTyping();
    if (state.socket) {
      // A fresh socket, so this tab leaves the old conversation's room on the server.
      state.confirmed = false;
      state.socket.disconnect();
      state.socket.connect();
    }
    if (state.open) {
      openPanel(false);
    }
  }

  // ================================================================ socket.io
  function loadSocketIo() {
    if (state.socketLoading) {
      return state.socketLoading;
    }
    state.socketLoading = new Promise(function (resolve, reject) {
      // Load our copy of the client without taking over a `window.io` the site may own.
      var hadIo = Object.prototype.hasOwnProperty.call(window, "io");
      var siteIo = window.io;
      var tag = el("script", "", { src: new URL("socket.io.min.js", config.assetsBase).href });
      tag.async = true;
      tag.onload = function () {
        var lib = window.io;
        if (hadIo) {
          window.io = siteIo;
        } else {
          try {
            delete window.io;
          } catch (e) {
            window.io = undefined;
          }
        }
        if (typeof lib === "function") {
          resolve(lib);
        } else {
          reject(new Error("socket.io client did not load (AMD loader on the page?)"));
        }
      };
      tag.onerror = function () {
        reject(new Error("socket.io client unavailable (was `npm ci` run in web/?)"));
      };
      (document.head || document.documentElement).appendChild(tag);
    });
    return state.socketLoading;
  }

  function connect() {
    if (state.socket) {
      if (!state.socket.connected && !state.socket.active) {
        state.socket.connect(); // the server closed the socket: socket.io will not retry
      }
      return;
    }
    if (state.socketLoading) {
      return;
    }
    if (state.open) {
      showNotice(TEXT.connecting);
    }
    loadSocketIo().then(startSocket, function (error) {
      state.socketLoading = null; // allow a later retry (next open or send)
      hideTyping();
      showNotice(TEXT.unavailable);
      if (window.console) {
        window.console.error("[posbot]", error.message);
      }
    });
  }

  function startSocket(io) {
    if (state.socket) {
      return;
    }
    var socket = io(config.server, { path: config.socketPath });
    state.socket = socket;

    socket.on("connect", function () {
      state.confirmed = false;
      socket.emit("session_request", { session_id: state.sessionId });
    });

    socket.on("session_confirm", function (data) {
      var id = typeof data === "string" ? data : data && data.session_id;
      if (!id) {
        return;
      }
      if (id !== state.sessionId) {
        // A new session: the history we have belongs to no conversation on the server.
        state.sessionId = id;
        store.set("localStorage", "session_id", id);
        saveHistory();
      }
      state.confirmed = true;
      if (state.lostConnection) {
        state.lostConnection = false;
        showNotice(TEXT.reconnected, RECONNECTED_NOTICE_MS);
      } else {
        hideNotice();
      }
      state.everConnected = true;
      flushPending();
    });

    socket.on("bot_uttered", onBotUttered);

    socket.on("disconnect", function (reason) {
      state.confirmed = false;
      if (reason === "io client disconnect") {
        return; // our own reset(), not a lost connection
      }
      state.lostConnection = true;
      showNotice(TEXT.disconnected);
      hideTyping();
      if (reason === "io server disconnect") {
        socket.connect(); // closed by the server: socket.io does not reconnect by itself
      }
    });

    socket.on("connect_error", function () {
      if (state.everConnected) {
        state.lostConnection = true;
        showNotice(TEXT.disconnected);
      } else {
        showNotice(TEXT.connectFailed);
      }
      if (!socket.active) {
        setTimeout(function () {
          socket.connect();
        }, 5000);
      }
    });
  }

  // Last, so every declaration above (e.g. LINK_PATTERN) is initialised before first use.
  if (document.body) {
    init();
  } else {
    document.addEventListener("DOMContentLoaded", init); // tag placed in <head> without defer
  }
})();
