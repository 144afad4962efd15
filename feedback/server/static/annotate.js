// The annotation page. Everything a model wrote or a prompt says is untrusted: it only ever
// reaches the page through text nodes / value, never innerHTML, so it shows as literal text, and
// characters that would hide or reorder text show as marked escapes (visibleNodes).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const kinds = new URLSearchParams(window.location.search).getAll("kind");
  const TITLES = {
    compare: "Which answer is better?",
    rate: "How good is this answer?",
    rank: "Order the answers, best first",
    edit: "Correct the answer",
  };

  let task = null; // the task on screen (as the API sent it)
  let busy = false; // a request for this task is in flight
  let visibleMs = 0; // time on this task while the page was visible
  let visibleSince = null;
  let rankOrder = []; // generation ids, best first
  let rankSel = 0;
  let pollTimer = null;
  let inFlight = 0; // requests started by loadNext / act and not yet settled

  // ------------------------------------------------------------------ untrusted text
  // Characters that erase, move or hide text: C0 controls but tab and newline (a carriage return
  // only outside \r\n), DEL and C1 controls, bidi controls, invisible format characters. The
  // same set as prefloop/visible.py (the terminal), shown the same way: "\x1b", "\u202e".
  const HIDDEN =
    /\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\u{e0000}-\u{e007f}]/gu;
  function escapeOf(code) {
    const hex = (n) => code.toString(16).padStart(n, "0");
    if (code === 0x0d) return "\\r";
    if (code <= 0xff) return "\\x" + hex(2);
    return code <= 0xffff ? "\\u" + hex(4) : "\\U" + hex(8);
  }
  // Text as DOM nodes: plain runs as text nodes, each hidden character as <span class="ctl">.
  function visibleNodes(text) {
    const out = document.createDocumentFragment();
    let pos = 0;
    for (const m of text.matchAll(HIDDEN)) {
      if (m.index > pos) out.append(document.createTextNode(text.slice(pos, m.index)));
      const code = m[0].codePointAt(0);
      const mark = document.createElement("span");
      mark.className = "ctl";
      mark.textContent = escapeOf(code);
      mark.title = "U+" + code.toString(16).toUpperCase().padStart(4, "0") + ": a hidden character, stored as it is";
      out.append(mark);
      pos = m.index + m[0].length;
    }
    if (pos < text.length) out.append(document.createTextNode(text.slice(pos)));
    return out;
  }
  const hasHidden = (text) => text.search(HIDDEN) >= 0;

  // ------------------------------------------------------------------ small helpers
  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.append(visibleNodes(String(text)));
    return e;
  }
  function kbd(key) {
    return el("kbd", null, key);
  }
  function button(label, key, onClick, className) {
    const b = el("button", className || null);
    b.type = "button";
    b.append(document.createTextNode(label + " "));
    if (key) b.append(kbd(key));
    b.addEventListener("click", onClick);
    return b;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function newKey() {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  // One idempotency key per claimed task, kept across reloads: a retried or repeated submit of
  // the same answer is recognised by the server and never stored twice.
  function keyFor(taskId) {
    const name = "prefloop-key-" + taskId;
    let key = window.sessionStorage.getItem(name);
    if (!key) {
      key = newKey();
      window.sessionStorage.setItem(name, key);
    }
    return key;
  }

  function say(message, kind) {
    const s = $("status");
    s.replaceChildren(visibleNodes(message));
    s.className = "status " + (kind || "");
  }

  // <body data-idle>: "true" once every request the page started has settled and what it shows
  // (the task, the progress counter) is current; "false" while one is in flight.
  async function tracked(work) {
    inFlight++;
    document.body.dataset.idle = "false";
    try {
      return await work();
    } finally {
      if (--inFlight === 0) document.body.dataset.idle = "true";
    }
  }

  // ------------------------------------------------------------------ time on task
  function startClock() {
    visibleMs = 0;
    visibleSince = document.visibilityState === "visible" ? performance.now() : null;
  }
  function elapsedSeconds() {
    let ms = visibleMs;
    if (visibleSince !== null) ms += performance.now() - visibleSince;
    return Math.round(ms) / 1000;
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      if (visibleSince === null) visibleSince = performance.now();
    } else if (visibleSince !== null) {
      visibleMs += performance.now() - visibleSince;
      visibleSince = null;
    }
  });

  // ------------------------------------------------------------------ API
  async function api(method, path, body, retries) {
    const headers = { "X-CSRF-Token": csrf, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    for (let attempt = 0; ; attempt++) {
      let resp;
      try {
        resp = await fetch(path, {
          method,
          headers,
          credentials: "same-origin",
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (err) {
        if (attempt < (retries || 0)) {
          say("Connection lost; retrying…", "warn");
          await sleep(500 * 2 ** attempt);
          continue;
        }
        throw Object.assign(new Error("The server did not answer. Your answer was kept; press the key again."), { status: 0 });
      }
      if (resp.status >= 500 && attempt < (retries || 0)) {
        await sleep(500 * 2 ** attempt);
        continue;
      }
      if (resp.status === 401) {
        window.location.assign("/login");
        throw Object.assign(new Error("Signed out"), { status: 401 });
      }
      if (resp.status === 204) return null;
      let data = {};
      try {
        data = await resp.json();
      } catch (err) {
        data = {};
      }
      if (!resp.ok) {
        const detail = data.error || (Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : resp.statusText);
        throw Object.assign(new Error(detail + (data.hint ? " (" + data.hint + ")" : "")), { status: resp.status });
      }
      return data;
    }
  }

  async function refreshProgress() {
    try {
      const p = await api("GET", "/api/me/progress");
      $("p-done").textContent = p.done;
      $("p-remaining").textContent = p.remaining;
      $("p-streak").textContent = p.streak;
      const total = p.done + p.remaining;
      $("p-bar").value = total ? p.done / total : 0;
    } catch (err) {
      /* progress is a nicety: never block annotating on it */
    }
  }

  // ------------------------------------------------------------------ loading tasks
  // Claim the next task and draw it, then bring the progress counter up to date (in this order:
  // the claim changes what is remaining).
  function loadNext() {
    return tracked(async () => {
      task = null;
      busy = true;
      clearTimeout(pollTimer);
      $("work").hidden = true;
      $("empty").hidden = true;
      $("loading").hidden = false;
      try {
        const body = kinds.length ? { kinds } : {};
        const next = await api("POST", "/api/tasks/next", body, 3);
        $("loading").hidden = true;
        if (next === null) {
          $("empty").hidden = false;
          renderKeys(null);
          pollTimer = setTimeout(loadNext, 30000);
        } else {
          render(next);
        }
      } catch (err) {
        $("loading").hidden = true;
        say(err.message, "error");
      } finally {
        busy = false;
      }
      await refreshProgress();
    });
  }

  // ------------------------------------------------------------------ rendering
  function renderPrompt(prompt) {
    const box = $("prompt");
    clear(box);
    // The whole conversation (system prompt and earlier turns), each turn with its role.
    const turns = prompt.messages.length ? prompt.messages : [{ role: "user", content: prompt.text }];
    const labelled = turns.length > 1 || turns[0].role !== "user";
    for (const m of turns) {
      const turn = el("div", "turn turn-" + m.role);
      if (labelled) turn.append(el("div", "role", m.role));
      turn.append(el("div", "text", m.content));
      box.append(turn);
    }
  }

  // The passages retrieval placed in the model's prompt (untrusted, like outputs): a person judging
  // a RAG answer must see its sources. Hidden when the outputs were made without retrieval.
  function renderSources(t) {
    const box = $("sources");
    const list = $("source-list");
    clear(list);
    const items = t.sources || [];
    box.hidden = items.length === 0;
    for (const p of items) {
      const li = el("li", "source-item");
      const where = [p.title, p.source || p.document_key].filter((x) => x).join(" — ");
      const score = typeof p.score === "number" ? " · score " + p.score.toFixed(3) : "";
      const head = el("div", "source-head", "[" + (p.number == null ? "?" : p.number) + "] " + where + score + (p.truncated ? " · cut to fit" : ""));
      li.append(head, el("div", "text", p.text));
      list.append(li);
    }
  }

  function candidateCard(c, keyHint) {
    const card = el("section", "card candidate");
    card.dataset.generationId = c.generation_id;
    const head = el("div", "label");
    head.append(visibleNodes("Answer " + c.label + " "));
    if (keyHint) head.append(kbd(keyHint));
    card.append(head, el("div", "text", c.text));
    return card;
  }

  function render(t) {
    task = t;
    if ($("status").classList.contains("error")) say("", ""); // keep "Saved: …" as the last confirmation
    $("task-title").replaceChildren(visibleNodes(TITLES[t.kind] || t.kind));
    renderPrompt(t.prompt);
    renderSources(t);
    const cands = $("candidates");
    const controls = $("controls");
    clear(cands);
    clear(controls);
    cands.className = "candidates kind-" + t.kind;
    if (t.kind === "compare") {
      t.candidates.forEach((c, i) => cands.append(candidateCard(c, String(i + 1))));
      controls.append(
        button("A is better", "1", () => choose(t.candidates[0].generation_id), "primary"),
        ...(t.allow_tie ? [button("Tie", "t", () => choose("tie"))] : []),
        button("B is better", "2", () => choose(t.candidates[1].generation_id), "primary"),
      );
    } else if (t.kind === "rate") {
      cands.append(candidateCard(t.candidates[0]));
      const [lo, hi] = t.scale;
      const scale = el("div", "scale");
      for (let v = lo; v <= hi; v++) {
        scale.append(button(String(v), ratingKey(v, lo, hi), () => rate(v), "scale-btn"));
      }
      const ends = el("div", "scale-ends");
      ends.append(el("span", null, lo + " = poor"), el("span", null, hi + " = excellent"));
      controls.append(scale, ends);
    } else if (t.kind === "rank") {
      rankOrder = t.candidates.map((c) => c.generation_id);
      rankSel = 0;
      cands.append(el("ol", "ranking"));
      renderRanking();
      controls.append(button("Submit ranking", "Enter", submitRanking, "primary"));
    } else if (t.kind === "edit") {
      if (hasHidden(t.candidates[0].text)) {
        // A text box cannot mark them: show the answer as stored above it.
        const card = el("section", "card candidate");
        card.append(
          el("div", "label", "The answer holds hidden characters (marked here; the text box keeps them as they are)"),
          el("div", "text", t.candidates[0].text),
        );
        cands.append(card);
      }
      const area = el("textarea", "editor");
      area.id = "editor";
      area.value = t.candidates[0].text;
      area.rows = Math.min(24, Math.max(6, t.candidates[0].text.split("\n").length + 2));
      area.setAttribute("aria-label", "corrected answer");
      area.spellcheck = true;
      cands.append(area);
      controls.append(
        button("Save", "Ctrl+Enter", saveEdit, "primary"),
        button("Reset", null, () => {
          area.value = t.candidates[0].text;
          area.focus();
        }),
      );
    }
    controls.append(button("Skip", "s", skip, "secondary"));
    renderSuggestions(t);
    renderKeys(t);
    $("work").hidden = false;
    startClock();
    if (t.kind === "edit") $("editor").focus();
  }

  function ratingKey(v, lo, hi) {
    if (v >= 0 && v <= 9) return String(v);
    if (v === 10 && lo >= 1) return "0";
    return null;
  }

  function renderRanking() {
    const list = document.querySelector("#candidates .ranking");
    clear(list);
    const byId = new Map(task.candidates.map((c) => [c.generation_id, c]));
    rankOrder.forEach((gid, i) => {
      const c = byId.get(gid);
      const item = el("li", "card rank-item" + (i === rankSel ? " selected" : ""));
      item.dataset.generationId = gid;
      const head = el("div", "label");
      head.append(el("span", "pos", "#" + (i + 1)), visibleNodes(" Answer " + c.label));
      const moves = el("span", "moves");
      moves.append(
        button("▲", null, () => move(i, -1), "mini"),
        button("▼", null, () => move(i, +1), "mini"),
      );
      head.append(moves);
      item.append(head, el("div", "text", c.text));
      item.addEventListener("click", (ev) => {
        if (ev.target.tagName !== "BUTTON") {
          rankSel = i;
          renderRanking();
        }
      });
      list.append(item);
    });
  }

  function move(i, delta) {
    const j = i + delta;
    if (j < 0 || j >= rankOrder.length) return;
    [rankOrder[i], rankOrder[j]] = [rankOrder[j], rankOrder[i]];
    rankSel = j;
    renderRanking();
  }

  function describe(value) {
    const label = (gid) => {
      const c = task.candidates.find((x) => x.generation_id === gid);
      return c ? c.label : "?";
    };
    if ("choice" in value) return value.choice === "tie" ? "a tie" : "answer " + label(value.choice);
    if ("rating" in value) return "a rating of " + value.rating;
    if ("ranking" in value) return "the order " + value.ranking.map(label).join(" > ");
    if ("text" in value) return "an edited answer: " + value.text;
    return JSON.stringify(value);
  }

  function renderSuggestions(t) {
    const box = $("suggestions");
    const list = $("suggestion-list");
    clear(list);
    box.open = false;
    const items = t.suggestions || [];
    box.hidden = items.length === 0;
    for (const s of items) {
      const li = el("li");
      li.append(el("strong", null, s.judge), visibleNodes(" suggests " + describe(s.value)));
      if (s.rationale) li.append(el("div", "muted text", s.rationale));
      list.append(li);
    }
  }

  const KEYS = {
    compare: [["1", "answer A is better"], ["2", "answer B is better"], ["t", "a tie"], ["s", "skip"]],
    rate: [["1…n", "rate the answer"], ["s", "skip"]],
    rank: [["↑ ↓ / k j", "select an answer"], ["Shift+↑ ↓ / K J", "move it up or down"], ["1…n", "select by position"], ["Enter", "submit the order"], ["s", "skip"]],
    edit: [["Ctrl+Enter", "save the edit"], ["Esc", "leave the text box"], ["e", "back into the text box"], ["s", "skip (outside the text box)"]],
  };
  function renderKeys(t) {
    const dl = $("keys");
    clear(dl);
    let rows = t ? KEYS[t.kind] : [["r", "check for new tasks"]];
    if (t && t.kind === "compare" && !t.allow_tie) rows = rows.filter((r) => r[0] !== "t");
    if (t && t.kind === "rate") rows = [[t.scale[0] + "…" + Math.min(t.scale[1], 9), "rate from " + t.scale[0] + " to " + t.scale[1]], ["s", "skip"]];
    for (const [k, what] of rows) {
      const dt = el("dt");
      dt.append(kbd(k));
      dl.append(dt, el("dd", null, what));
    }
  }

  // ------------------------------------------------------------------ answering
  // Post an answer or a skip for the task on screen, then move on to the next task.
  async function act(path, body, done) {
    if (!task || busy) return;
    busy = true;
    const t = task;
    document.body.classList.add("saving");
    await tracked(async () => {
      try {
        const result = await api("POST", "/api/tasks/" + t.task_id + path, body, 4);
        window.sessionStorage.removeItem("prefloop-key-" + t.task_id);
        say(done(result), "ok");
        busy = false;
        await loadNext();
      } catch (err) {
        busy = false;
        say(err.message, "error");
        if (err.status === 409) await loadNext(); // no longer ours (answered elsewhere, or released)
      } finally {
        document.body.classList.remove("saving");
      }
    });
  }

  function send(value) {
    if (!task) return;
    const body = { value, idempotency_key: keyFor(task.task_id), duration_s: elapsedSeconds() };
    act("/submit", body, (receipt) =>
      (receipt.duplicate ? "Already saved: " : "Saved: ") + describe(value) + (receipt.late ? " (after the lease ran out; kept)" : ""),
    );
  }

  function skip() {
    act("/skip", {}, () => "Skipped.");
  }

  function choose(choice) {
    send({ choice });
  }
  function rate(v) {
    send({ rating: v });
  }
  function submitRanking() {
    send({ ranking: rankOrder.slice() });
  }
  function saveEdit() {
    const text = $("editor").value;
    if (!text.trim()) {
      say("The edited answer is empty: write the corrected answer, or skip.", "error");
      return;
    }
    send({ text });
  }

  // ------------------------------------------------------------------ keyboard
  document.addEventListener("keydown", (ev) => {
    const target = ev.target;
    const typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT");
    if (typing) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && task && task.kind === "edit") {
        ev.preventDefault();
        saveEdit();
      } else if (ev.key === "Escape") {
        target.blur();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return; // leave browser shortcuts alone
    if (!task) {
      if (ev.key === "r" && !$("empty").hidden) loadNext();
      return;
    }
    if (busy) return;
    const key = ev.key;
    let handled = true;
    if (key === "s") {
      skip();
    } else if (task.kind === "compare") {
      if (key === "1") choose(task.candidates[0].generation_id);
      else if (key === "2") choose(task.candidates[1].generation_id);
      else if ((key === "t" || key === "T") && task.allow_tie) choose("tie");
      else handled = false;
    } else if (task.kind === "rate") {
      const [lo, hi] = task.scale;
      let v = /^[0-9]$/.test(key) ? Number(key) : null;
      if (v === 0 && hi === 10 && lo >= 1) v = 10;
      if (v !== null && v >= lo && v <= hi) rate(v);
      else handled = false;
    } else if (task.kind === "rank") {
      const n = rankOrder.length;
      if ((key === "ArrowUp" && ev.shiftKey) || key === "K") move(rankSel, -1);
      else if ((key === "ArrowDown" && ev.shiftKey) || key === "J") move(rankSel, +1);
      else if (key === "ArrowUp" || key === "k") {
        rankSel = Math.max(0, rankSel - 1);
        renderRanking();
      } else if (key === "ArrowDown" || key === "j") {
        rankSel = Math.min(n - 1, rankSel + 1);
        renderRanking();
      } else if (/^[1-9]$/.test(key) && Number(key) <= n) {
        rankSel = Number(key) - 1;
        renderRanking();
      } else if (key === "Enter") submitRanking();
      else handled = false;
    } else if (task.kind === "edit") {
      if (key === "e" || key === "Enter") $("editor").focus();
      else handled = false;
    } else {
      handled = false;
    }
    if (handled) ev.preventDefault();
  });

  const guidelines = document.querySelector(".guidelines");
  if (guidelines) guidelines.replaceChildren(visibleNodes(guidelines.textContent));
  document.body.dataset.idle = "false";
  $("check-again").addEventListener("click", loadNext);
  loadNext();
})();
