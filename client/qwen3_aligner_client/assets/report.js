// Alignment report: plays the embedded audio and shows which unit is being heard.
// Reads #report-data (units, transcript pieces, waveform peaks) and #report-audio (base64 MP3).
// Everything from the data goes into the page as text nodes or canvas text, never as markup.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("report-data").textContent);
  const n = data.start.length;
  const duration = Math.max(data.duration, 0.01);
  // The alignment's times, as shown in titles and the table.
  const starts = Float64Array.from(data.start, (ms) => ms / 1000);
  const ends = Float64Array.from(data.end, (ms) => ms / 1000);
  // Where units are on the time line: starts made non-decreasing, so that a binary search finds
  // the unit playing at a time, and units timed after the end of the audio put at its end.
  const keys = new Float64Array(n);
  const until = new Float64Array(n);
  let beyond = 0;
  for (let i = 0, m = 0; i < n; i++) {
    m = Math.max(m, starts[i]);
    keys[i] = Math.min(m, duration);
    until[i] = Math.min(Math.max(ends[i], keys[i]), duration);
    if (Math.max(starts[i], ends[i]) > duration) beyond++;
  }
  // Confidence: per-unit score (0-1) and repair flag, when the server sent them.
  const scored = Array.isArray(data.score) && Array.isArray(data.repaired);
  const low = (k) => scored && data.score[k] < data.lowScore;
  const repaired = (k) => scored && data.repaired[k];
  const flagged = (k) => low(k) || repaired(k);
  const EPS = 0.001; // s: currentTime may read back a hair below the time it was set to
  const audio = $("audio");
  const header = $("top");
  const transcript = $("transcript");
  const table = $("table");
  const tbody = $("tbody");
  const trows = $("trows");
  const wave = $("wave");
  const overview = $("overview");
  const follow = $("follow");

  function fmt(t) {
    const cs = Math.round(Math.max(0, t) * 100);
    const h = Math.floor(cs / 360000);
    const m = Math.floor((cs % 360000) / 6000);
    const s = ((cs % 6000) / 100).toFixed(2).padStart(5, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function scoreText(k) {
    if (!scored) return "";
    return `${data.score[k].toFixed(2)}${repaired(k) ? " repaired" : ""}`;
  }

  function describe(k) {
    const length = Math.max(0, ends[k] - starts[k]).toFixed(2);
    const times = `${fmt(starts[k])} \u2013 ${fmt(ends[k])} (${length} s) \u00b7 ${data.text[k]}`;
    if (!scored) return times;
    const fixed = repaired(k) ? " \u00b7 times repaired" : "";
    return `${times} \u00b7 score ${data.score[k].toFixed(2)}${fixed}`;
  }

  // Classes that mark a unit to check: a low score, repaired times.
  function markClasses(el, k) {
    if (low(k)) el.classList.add("low");
    if (repaired(k)) el.classList.add("rep");
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
  }

  // Index of the last unit whose key is <= t, or -1 before the first unit.
  function indexAt(t) {
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (keys[mid] <= t + EPS) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }

  // Units that share a start (zero-length or collapsed timestamps) are one instant: the one the
  // user picked stays current until playback leaves that instant.
  let pinned = -1;
  function unitAt(t) {
    const i = indexAt(t);
    if (pinned >= 0) {
      if (i >= 0 && keys[i] === keys[pinned]) return pinned;
      pinned = -1;
    }
    return i;
  }

  // ---- transcript, rendered lazily in chunks ------------------------------------------------
  const CHUNK_UNITS = 250; // a chunk ends after this many units, at a sentence or line end...
  const CHUNK_MAX = 600; // ...or here at the latest
  const SENTENCE_END = /[.!?\u2026\u3002\uff01\uff1f]["'\u201d\u2019)\]\u300d\u300f\uff09]*$/;
  const unitEls = new Array(n);
  const chunkStarts = [0];
  for (let k = 0, a = 0; k + 1 < n; k++) {
    const size = k + 1 - a;
    const boundary = data.gap[k + 1].includes("\n") || SENTENCE_END.test(data.label[k]);
    if (size >= CHUNK_MAX || (size >= CHUNK_UNITS && boundary)) {
      a = k + 1;
      chunkStarts.push(a);
    }
  }

  function chunkOf(k) {
    let lo = 0;
    let hi = chunkStarts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (chunkStarts[mid] <= k) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }

  // Height of a chunk before it is rendered, so the scrollbar is about right.
  function estimateHeight(a, b) {
    const style = getComputedStyle(transcript);
    const fontSize = parseFloat(style.fontSize) || 18;
    const lineHeight = parseFloat(style.lineHeight) || fontSize * 1.9;
    const halfWidths = Math.max(8, transcript.clientWidth / (fontSize * 0.5));
    let cells = 0;
    let lines = 1;
    const count = (s) => {
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c === 10) lines++;
        cells += c >= 0x1100 ? 2 : 1;
      }
    };
    for (let k = a; k < b; k++) {
      count(data.gap[k]);
      count(data.label[k]);
    }
    return Math.ceil((lines + cells / halfWidths) * lineHeight);
  }

  const chunks = [];
  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) renderChunk(Number(entry.target.dataset.chunk));
      }
    },
    { rootMargin: "1500px 0px" },
  );
  {
    const frag = document.createDocumentFragment();
    chunkStarts.forEach((a, c) => {
      const b = c + 1 < chunkStarts.length ? chunkStarts[c + 1] : n;
      const div = document.createElement("div");
      div.className = "chunk";
      div.dataset.chunk = String(c);
      chunks.push({ a, b, div, done: false });
      frag.appendChild(div);
    });
    transcript.appendChild(frag);
    for (const chunk of chunks) {
      chunk.div.style.minHeight = `${estimateHeight(chunk.a, chunk.b)}px`;
      observer.observe(chunk.div);
    }
  }

  function renderChunk(c) {
    const chunk = chunks[c];
    if (chunk.done) return;
    chunk.done = true;
    observer.unobserve(chunk.div);
    const frag = document.createDocumentFragment();
    const text = (s) => s && frag.appendChild(document.createTextNode(s));
    text(c === 0 ? data.gap[0] : data.gap[chunk.a].replace(/^\s+/, ""));
    for (let k = chunk.a; k < chunk.b; k++) {
      if (k > chunk.a) text(data.gap[k]);
      const span = document.createElement("span");
      span.className = ends[k] > starts[k] ? "u" : "u zero";
      markClasses(span, k);
      if (k === current) span.classList.add("cur");
      span.dataset.i = String(k);
      span.title = describe(k);
      span.textContent = data.label[k];
      frag.appendChild(span);
      unitEls[k] = span;
    }
    if (c === chunks.length - 1 && n > 0) text(data.gap[n]);
    chunk.div.appendChild(frag);
    chunk.div.style.minHeight = "";
  }

  // ---- table of units, virtualised ----------------------------------------------------------
  const ROW = 26; // px, as .row's height in the CSS
  let tableShown = false;
  let shown = [-1, -1];
  $("tspacer").style.height = `${n * ROW}px`;

  function renderTable(force) {
    if (!tableShown) return;
    const first = Math.max(0, Math.floor(tbody.scrollTop / ROW) - 10);
    const last = Math.min(n, Math.ceil((tbody.scrollTop + tbody.clientHeight) / ROW) + 10);
    if (!force && first === shown[0] && last === shown[1]) return;
    shown = [first, last];
    const frag = document.createDocumentFragment();
    for (let k = first; k < last; k++) {
      const row = document.createElement("div");
      row.className = k === current ? "row cur" : "row";
      markClasses(row, k);
      row.setAttribute("role", "row");
      row.dataset.i = String(k);
      row.title = describe(k);
      const cells = [
        String(k + 1),
        fmt(starts[k]),
        fmt(ends[k]),
        Math.max(0, ends[k] - starts[k]).toFixed(2),
        data.text[k],
        data.label[k],
        scoreText(k),
      ];
      for (const value of cells) {
        const cell = document.createElement("span");
        cell.setAttribute("role", "cell");
        cell.textContent = value;
        row.appendChild(cell);
      }
      frag.appendChild(row);
    }
    trows.replaceChildren(frag);
    trows.style.transform = `translateY(${first * ROW}px)`;
  }

  let tableQueued = false;
  tbody.addEventListener("scroll", () => {
    if (tableQueued) return;
    tableQueued = true;
    requestAnimationFrame(() => {
      tableQueued = false;
      renderTable(false);
    });
  });

  // ---- the current unit ---------------------------------------------------------------------
  let current = -1;

  function reveal(k) {
    if (tableShown) {
      const y = k * ROW;
      if (y < tbody.scrollTop || y + ROW > tbody.scrollTop + tbody.clientHeight) {
        tbody.scrollTop = Math.max(0, y - tbody.clientHeight / 3);
        renderTable(false);
      }
      return;
    }
    const box = unitEls[k].getBoundingClientRect();
    const top = header.getBoundingClientRect().bottom;
    if (box.top < top + 4 || box.bottom > window.innerHeight - 4) {
      window.scrollBy(0, box.top - top - (window.innerHeight - top) / 3);
    }
  }

  function setCurrent(k, show) {
    if (k === current) return;
    if (current >= 0 && unitEls[current]) unitEls[current].classList.remove("cur");
    current = k;
    document.body.dataset.current = String(k);
    const times = k >= 0 ? `${fmt(starts[k])} \u2013 ${fmt(ends[k])}` : "";
    $("now").textContent = k >= 0 ? `${data.label[k]}  ${times}` : "";
    if (k >= 0) {
      renderChunk(chunkOf(k));
      unitEls[k].classList.add("cur");
      if (show) reveal(k);
    }
    if (tableShown) {
      for (const row of trows.children) row.classList.toggle("cur", Number(row.dataset.i) === k);
    }
  }

  // ---- waveform -----------------------------------------------------------------------------
  const peakMin = Int8Array.from(data.peaks.min);
  const peakMax = Int8Array.from(data.peaks.max);
  const peakSeconds = data.peaks.seconds || 1;
  const COLORS = {
    wave: "#8e8e93",
    boundary: "#0a60c2",
    unit: "rgba(10, 96, 194, 0.08)",
    current: "rgba(255, 213, 79, 0.7)",
    playhead: "#d62728",
    window: "rgba(10, 96, 194, 0.15)",
    flagged: "rgba(214, 39, 40, 0.16)",
    label: "#1d1d1f",
    band: "rgba(255, 255, 255, 0.75)",
  };
  let viewSeconds = Math.min(duration, 10); // s shown in the detail waveform (zoom: - and +)
  let viewStart = 0;

  function fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    return dpr;
  }

  function drawPeaks(ctx, w, h, t0, t1) {
    const mid = h / 2;
    const half = h / 2 - 1;
    const span = t1 - t0;
    ctx.fillStyle = COLORS.wave;
    for (let x = 0; x < w; x++) {
      const a = t0 + (x / w) * span;
      const b = t0 + ((x + 1) / w) * span;
      const i0 = Math.max(0, Math.floor(a / peakSeconds));
      const i1 = Math.min(peakMin.length, Math.max(i0 + 1, Math.ceil(b / peakSeconds)));
      if (i0 >= peakMin.length) break;
      let lo = 127;
      let hi = -127;
      for (let i = i0; i < i1; i++) {
        if (peakMin[i] < lo) lo = peakMin[i];
        if (peakMax[i] > hi) hi = peakMax[i];
      }
      const y0 = mid - (hi / 127) * half;
      const y1 = mid - (lo / 127) * half;
      ctx.fillRect(x, y0, 1, Math.max(1, y1 - y0));
    }
  }

  function drawWave(t) {
    const dpr = fitCanvas(wave);
    const ctx = wave.getContext("2d");
    const w = wave.width;
    const h = wave.height;
    if (t < viewStart || t > viewStart + viewSeconds * 0.92) {
      viewStart = Math.max(0, Math.min(t - viewSeconds * 0.08, duration - viewSeconds));
    }
    const t0 = viewStart;
    const t1 = viewStart + viewSeconds;
    const X = (s) => ((s - t0) / viewSeconds) * w;
    ctx.clearRect(0, 0, w, h);
    const first = Math.max(0, indexAt(t0));
    const visible = indexAt(t1) - first + 1;
    const sparse = visible < w / (3 * dpr);
    const labelled = sparse && visible < 400;
    if (current >= 0) {
      const x0 = X(keys[current]);
      ctx.fillStyle = COLORS.current;
      ctx.fillRect(x0 - dpr, 0, Math.max(2 * dpr, X(until[current]) - x0 + 2 * dpr), h);
    }
    drawPeaks(ctx, w, h, t0, t1);
    const band = 18 * dpr; // labels sit on a light band at the top
    if (labelled) {
      ctx.fillStyle = COLORS.band;
      ctx.fillRect(0, 0, w, band);
    }
    ctx.font = `${12 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    for (let k = first; k < n && keys[k] <= t1; k++) {
      const x0 = X(keys[k]);
      const x1 = X(until[k]);
      if (sparse && flagged(k) && x1 > x0) {
        ctx.fillStyle = COLORS.flagged;
        ctx.fillRect(x0, 0, x1 - x0, h);
      } else if (sparse && k % 2 === 0 && x1 > x0) {
        ctx.fillStyle = COLORS.unit;
        ctx.fillRect(x0, 0, x1 - x0, h);
      }
      ctx.fillStyle = COLORS.boundary;
      ctx.fillRect(Math.round(x0), 0, Math.max(1, Math.round(dpr)), h);
      if (labelled) {
        let next = k + 1;
        while (next < n && keys[next] === keys[k]) next++;
        const room = (next < n ? X(keys[next]) : w) - x0 - 3 * dpr;
        if (room > 6 * dpr) {
          ctx.save();
          ctx.beginPath();
          ctx.rect(x0, 0, room, band);
          ctx.clip();
          ctx.fillStyle = COLORS.label;
          ctx.fillText(data.label[k], x0 + 2 * dpr, 2 * dpr);
          ctx.restore();
        }
      }
    }
    ctx.fillStyle = COLORS.playhead;
    ctx.fillRect(Math.round(X(t)), 0, Math.max(1, Math.round(1.5 * dpr)), h);
  }

  function drawOverview(t) {
    fitCanvas(overview);
    const ctx = overview.getContext("2d");
    const w = overview.width;
    const h = overview.height;
    const X = (s) => (s / duration) * w;
    ctx.clearRect(0, 0, w, h);
    drawPeaks(ctx, w, h, 0, duration);
    if (n < w / 4) {
      ctx.fillStyle = COLORS.boundary;
      for (let k = 0; k < n; k++) ctx.fillRect(Math.round(X(keys[k])), h - 4, 1, 4);
    }
    if (viewSeconds < duration) {
      ctx.fillStyle = COLORS.window;
      ctx.fillRect(X(viewStart), 0, Math.max(2, X(viewSeconds)), h);
    }
    ctx.fillStyle = COLORS.playhead;
    ctx.fillRect(Math.round(X(t)), 0, 2, h);
  }

  // ---- playback -----------------------------------------------------------------------------
  function update(show) {
    const t = audio.currentTime;
    setCurrent(unitAt(t), show && follow.checked);
    drawWave(t);
    drawOverview(t);
    $("clock").textContent = `${fmt(t)} / ${fmt(duration)}`;
  }

  let frame = 0;
  function tick() {
    update(true);
    frame = audio.paused ? 0 : requestAnimationFrame(tick);
  }

  function play() {
    const started = audio.play();
    if (started && started.catch) {
      started.catch((e) => {
        if (e.name !== "AbortError") showError(`cannot play: ${e.message}`);
      });
    }
  }

  function togglePlay() {
    if (audio.paused) play();
    else audio.pause();
  }

  function seekUnit(k) {
    if (k < 0 || k >= n) return;
    pinned = k;
    audio.currentTime = keys[k];
    setCurrent(k, true);
    update(false);
  }

  function seekTime(t) {
    pinned = -1;
    audio.currentTime = Math.max(0, Math.min(t, duration));
    update(true);
  }

  function step(direction) {
    if (n) seekUnit(Math.min(n - 1, Math.max(0, current + direction)));
  }

  audio.addEventListener("play", () => {
    $("play").textContent = "Pause";
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(tick);
  });
  audio.addEventListener("pause", () => {
    $("play").textContent = "Play";
  });
  for (const name of ["timeupdate", "seeked", "pause", "ended", "loadedmetadata"]) {
    audio.addEventListener(name, () => update(!audio.paused));
  }
  audio.addEventListener("error", () => {
    showError("This browser cannot play the embedded audio (MP3).");
  });

  // ---- input --------------------------------------------------------------------------------
  const unitIndex = (target) => {
    const el = target instanceof Element ? target.closest("[data-i]") : null;
    return el ? Number(el.dataset.i) : -1;
  };
  // Play from a unit; one at the very end of the audio is only selected (playing there would
  // start over from the beginning).
  const playFrom = (k) => {
    seekUnit(k);
    const end = Number.isFinite(audio.duration) ? audio.duration : duration;
    if (keys[k] < end - 0.05) play();
  };
  transcript.addEventListener("click", (e) => {
    const k = unitIndex(e.target);
    if (k >= 0) playFrom(k);
  });
  trows.addEventListener("click", (e) => {
    const k = unitIndex(e.target);
    if (k >= 0) playFrom(k);
  });
  wave.addEventListener("click", (e) => {
    const box = wave.getBoundingClientRect();
    seekTime(viewStart + ((e.clientX - box.left) / box.width) * viewSeconds);
    play();
  });
  overview.addEventListener("click", (e) => {
    const box = overview.getBoundingClientRect();
    seekTime(((e.clientX - box.left) / box.width) * duration);
  });
  $("play").addEventListener("click", togglePlay);
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("speed").addEventListener("change", (e) => {
    audio.playbackRate = Number(e.target.value);
  });
  const zoom = (factor) => {
    viewSeconds = Math.min(duration, Math.max(1, viewSeconds * factor));
    update(false);
  };
  $("zoom-in").addEventListener("click", () => zoom(0.5));
  $("zoom-out").addEventListener("click", () => zoom(2));
  $("view").addEventListener("click", (e) => {
    tableShown = !tableShown;
    table.hidden = !tableShown;
    transcript.hidden = tableShown;
    e.currentTarget.textContent = tableShown ? "Text" : "Table";
    e.currentTarget.setAttribute("aria-pressed", String(tableShown));
    renderTable(true);
    if (current >= 0) reveal(current);
  });
  // A mouse click leaves no focus on a button, so space keeps meaning play/pause.
  document.addEventListener("click", (e) => {
    const button = e.target instanceof Element ? e.target.closest("button") : null;
    if (button && e.detail > 0) button.blur();
  });
  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    const tag = e.target instanceof Element ? e.target.tagName : "";
    const space = e.key === " " || e.code === "Space";
    if (/^(INPUT|SELECT|TEXTAREA|AUDIO)$/.test(tag)) return;
    if (space && /^(BUTTON|A)$/.test(tag)) return;
    if (space) togglePlay();
    else if (e.key === "ArrowRight") step(1);
    else if (e.key === "ArrowLeft") step(-1);
    else return;
    e.preventDefault();
  });
  window.addEventListener("resize", () => update(false));

  // ---- start --------------------------------------------------------------------------------
  const quality = scored
    ? ` \u00b7 mean score ${data.meanScore.toFixed(2)} \u00b7 ` +
      `${(100 * data.repairedShare).toFixed(1)}% repaired`
    : "";
  $("meta").textContent =
    `${data.language} \u00b7 ${fmt(duration)} \u00b7 ${n} unit${n === 1 ? "" : "s"}${quality}`;
  // Units to check: low score or repaired times, each a link that plays it.
  if (scored) {
    const CHECK_MAX = 1000; // listed at most; the count says how many there are
    const list = $("check-list");
    const frag = document.createDocumentFragment();
    for (const k of data.check.slice(0, CHECK_MAX)) {
      const item = document.createElement("li");
      item.dataset.i = String(k);
      item.title = describe(k);
      markClasses(item, k);
      item.textContent = `${fmt(starts[k])}  ${data.label[k]}  (${scoreText(k)})`;
      frag.appendChild(item);
    }
    list.appendChild(frag);
    const more = data.check.length - CHECK_MAX;
    $("checks-summary").textContent =
      `${data.check.length} unit${data.check.length === 1 ? "" : "s"} to check ` +
      `(score below ${data.lowScore} or times repaired)` +
      (more > 0 ? `; the first ${CHECK_MAX} are listed` : "");
    $("checks").hidden = false;
    list.addEventListener("click", (e) => {
      const k = unitIndex(e.target);
      if (k >= 0) playFrom(k);
    });
  }
  if (beyond) {
    const [what, where] = beyond === 1 ? ["unit is", "it is"] : ["units are", "they are"];
    showError(
      `${beyond} ${what} timed after the end of the audio (${fmt(duration)}); ` +
        `${where} shown at its end.`,
    );
  }
  try {
    const source = $("report-audio");
    const binary = atob(source.textContent.trim());
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    audio.src = URL.createObjectURL(new Blob([bytes], { type: source.dataset.type }));
    source.textContent = "";
  } catch (e) {
    showError(`The embedded audio is damaged: ${e.message}`);
  }
  renderChunk(0);
  update(false);
  document.documentElement.dataset.ready = "true";
})();
