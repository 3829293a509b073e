// bulklink console: a single page over the public JSON API. No framework, no build step,
// nothing loaded from elsewhere. The bearer token lives in this tab's sessionStorage and is
// sent only to this origin's API; the page itself holds no authority.
"use strict";

(() => {
  const TOKEN_KEY = "bulklink.token";
  const BRAND_KEY = "bulklink.brand";
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const FAILURES_PAGE = 20;
  const LOCATIONS_PAGE = 100;
  const OFFERS_PAGE = 100;
  // An import's file: its format as the name's extension says (the user may choose another).
  const IMPORT_FORMATS = { csv: "csv", ndjson: "ndjson", jsonl: "ndjson" };
  // Drift reads every location of the brand (the API says: for checking, not for polling), so
  // the offer page counts it when the rule is set, when the offer's count of locations moved
  // (at most every DRIFT_SOON_MS), and otherwise every DRIFT_LATE_MS.
  const DRIFT_SOON_MS = 5000;
  const DRIFT_LATE_MS = 30000;
  // The location filters the console passes on to `GET /locations`, as the page's hash query.
  const LOCATION_FILTERS = ["status", "country", "city", "tag", "externalId"];
  // Whether a job has ended: the API sets finishedAt then. Which actions a job allows is the
  // API's `allowedActions`; the page keeps no status rules of its own.
  const ended = (job) => Boolean(job.finishedAt);
  // A job that applies an import's rows (an import, or a retry of one) counts rows, not links.
  const importing = (job) => job.type === "import-locations" || job.action === "import";
  const STATUS_CLASS = {
    SCHEDULED: "wait", AWAITING_APPROVAL: "paused",
    PENDING: "wait", RUNNING: "run", PAUSED: "paused", CANCELLING: "warn", FAILING: "warn",
    SUCCEEDED: "ok", COMPLETED_WITH_ERRORS: "warn", FAILED: "bad", CANCELLED: "stop",
    pending: "wait", succeeded: "ok", failed: "bad", active: "ok", disabled: "bad", closed: "stop",
    waiting: "wait", started: "run", expired: "stop",
  };
  // The API's root: the console is served at <root>/console/.
  const API_ROOT = new URL("../", location.href);
  const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  // Progress samples per job, kept while the page is open: the chart's points.
  const samples = new Map();

  const $ = (id) => document.getElementById(id);

  // --- DOM -----------------------------------------------------------------------------------

  /** An element with attributes (`on…` are listeners) and children (text is text, never HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    append(el, children);
    return el;
  }

  function replace(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  /** As `replace`, only when `key` changed: links inside keep their focus between polls. */
  function replaceOnChange(el, key, ...children) {
    if (el.dataset.shown === key) return;
    el.dataset.shown = key;
    replace(el, ...children);
  }

  /**
   * Keeps one row per item in `tbody`, in the items' order, rebuilding a row only when its
   * item changed, and gives focus back to the control that had it (live updates never
   * steal a keyboard user's place).
   */
  function syncRows(tbody, items, key, cells) {
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.focusKey : undefined;
    const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
    const wanted = [];
    for (const item of items) {
      const k = key(item);
      const signature = JSON.stringify(item);
      let tr = existing.get(k);
      if (!tr || tr.dataset.signature !== signature) {
        tr = h("tr", { dataset: { key: k, signature } }, cells(item));
      }
      wanted.push(tr);
    }
    const same = wanted.length === tbody.children.length
      && wanted.every((tr, i) => tbody.children[i] === tr);
    if (!same) tbody.replaceChildren(...wanted);
    if (focused) {
      const again = tbody.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
      if (again && document.activeElement !== again) again.focus();
    }
  }

  function td(content, cls) {
    return h("td", { class: cls }, content);
  }

  function statusBadge(status) {
    // Breakable after each underscore (a narrow screen wraps COMPLETED_WITH_ERRORS there).
    const parts = status.split("_").flatMap((part, i) => (i ? [h("wbr"), `_${part}`] : [part]));
    return h("span", { class: `status ${STATUS_CLASS[status] || "wait"}` }, h("span", {}, parts));
  }

  function progressCell(job, label) {
    const pct = Math.max(0, Math.min(100, job.percent || 0));
    return h("div", { class: "progress" },
      h("progress", { max: 100, value: pct.toFixed(1), "aria-label": label }),
      h("span", { class: "pct" }, `${oneDecimal.format(pct)}%`));
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "—";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function rate(perSec) {
    return perSec === null || perSec === undefined ? "—" : `${numbers.format(perSec)}/s`;
  }

  function announce(text) {
    $("announcer").textContent = text;
  }

  function showError(text) {
    const alert = $("alert");
    alert.textContent = text;
    alert.hidden = false;
  }

  function clearError() {
    $("alert").hidden = true;
  }

  // --- the API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, response) {
      super(detail);
      this.status = status;
      this.retryAfter = response ? Number(response.headers.get("Retry-After")) || 0 : 0;
      this.location = response ? response.headers.get("Location") : null;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** Calls the API as the signed-in caller; answers `{ status, data, location }`. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${token()}` };
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(new URL(path, API_ROOT), init);
    } catch (e) {
      throw new ApiError(0, `the server could not be reached (${e.message})`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!response.ok) {
      const detail = data && (data.detail || data.title) ? (data.detail || data.title) : response.statusText;
      if (response.status === 401) signOut(`The token was refused: ${detail}`);
      throw new ApiError(response.status, detail, response);
    }
    return { status: response.status, data, location: response.headers.get("Location") };
  }

  /** The token's claims, read for display only (the server verifies them). */
  function claims() {
    try {
      const part = (token() || "").split(".")[1];
      const binary = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
      const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (_) {
      return {};
    }
  }

  function isAdmin() {
    const scope = claims().scope;
    return typeof scope === "string" && scope.split(" ").includes("bulklink:admin");
  }

  function brandQuery() {
    if (!isAdmin()) return "";
    const brand = sessionStorage.getItem(BRAND_KEY);
    return brand ? `brandId=${encodeURIComponent(brand)}` : null;
  }

  // --- polling -------------------------------------------------------------------------------

  let current = null; // { refresh(), stopped }
  let timer = null;

  function poll(view) {
    clearTimeout(timer);
    const tick = async () => {
      if (view.stopped) return;
      let delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
      try {
        const again = await view.refresh();
        clearError();
        if (again === false) return;
      } catch (e) {
        if (view.stopped) return;
        if (e.status === 429) delay = Math.max(1, e.retryAfter) * 1000;
        if (e.status !== 401) showError(`Could not refresh: ${e.message}`);
      }
      if (!view.stopped) timer = setTimeout(tick, delay);
    };
    tick();
  }

  /**
   * Pages through a list with the API's cursors (a stack of the pages seen). `fetchPage(cursor)`
   * answers the API's page (`{ items, nextCursor }`); `show(items)` puts its items on the page.
   * Only the newest request's answer is shown, and a poll asks for the page asked for last: a
   * poll never puts back the page a button just left.
   */
  function pager(label, fetchPage, show) {
    const cursors = [null];
    let page = 0; // the page shown
    let wanted = 0; // the page asked for last
    let latest = 0;
    const refused = (e) => showError(`Could not load the page: ${e.message}`);
    const prev = h("button", { type: "button", class: "secondary", disabled: true, onclick: () => load(page - 1).catch(refused) }, "Previous page");
    const next = h("button", { type: "button", class: "secondary", disabled: true, onclick: () => load(page + 1).catch(refused) }, "Next page");
    const pageLabel = h("span", { class: "muted" }, "Page 1");
    const load = async (to) => {
      const asked = ++latest;
      wanted = to;
      let data;
      try {
        data = await fetchPage(cursors[to]);
      } catch (e) {
        if (asked === latest) wanted = page;
        throw e;
      }
      if (asked !== latest) return;
      page = to;
      cursors.length = to + 1;
      if (data.nextCursor) cursors.push(data.nextCursor);
      show(data.items || []);
      prev.disabled = to === 0;
      next.disabled = !data.nextCursor;
      pageLabel.textContent = `Page ${to + 1}`;
    };
    return {
      element: h("nav", { class: "pager", "aria-label": label }, prev, pageLabel, next),
      refresh: () => load(wanted),
      reset: () => {
        latest += 1;
        page = 0;
        wanted = 0;
        cursors.length = 1;
      },
    };
  }

  // --- views ---------------------------------------------------------------------------------

  function brandPicker(onChange) {
    if (!isAdmin()) return null;
    const input = h("input", {
      type: "text", id: "brand-input", name: "brand", autocomplete: "off", spellcheck: "false",
      value: sessionStorage.getItem(BRAND_KEY) || "", "aria-describedby": "brand-help",
    });
    return h("form", {
      class: "inline-form",
      onsubmit: (event) => {
        event.preventDefault();
        sessionStorage.setItem(BRAND_KEY, input.value.trim());
        onChange();
      },
    },
    h("div", {}, h("label", { for: "brand-input" }, "Brand"), input),
    h("button", { type: "submit" }, "Show"),
    h("p", { id: "brand-help", class: "help" }, "An administrator names the brand to look at."));
  }

  function jobsView(view) {
    const tbody = h("tbody");
    const empty = h("p", { class: "empty", hidden: true }, "No jobs yet.");
    const table = h("div", { class: "table-wrap" },
      h("table", {},
        h("caption", {}, "Newest first; updates every second."),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Job"), h("th", { scope: "col", class: "hide-narrow" }, "Kind"),
          h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Progress"),
          h("th", { scope: "col", class: "num hide-narrow" }, "Rate"),
          h("th", { scope: "col", class: "num hide-narrow" }, "ETA"),
          h("th", { scope: "col", class: "hide-narrow" }, "Created"))),
        tbody),
      empty);
    const body = [h("h1", { tabindex: "-1" }, "Jobs"), brandPicker(() => poll(view)), table];
    view.refresh = async () => {
      const brand = brandQuery();
      if (brand === null) {
        empty.textContent = "Name a brand to see its jobs.";
        empty.hidden = false;
        syncRows(tbody, [], () => "", () => []);
        return false;
      }
      const { data } = await api("GET", `jobs?limit=100${brand ? `&${brand}` : ""}`);
      const items = data.items || [];
      empty.textContent = "No jobs yet.";
      empty.hidden = items.length > 0;
      syncRows(tbody, items, (job) => job.id, (job) => [
        td(h("a", { href: `#/jobs/${job.id}`, class: "mono", dataset: { focusKey: `job-${job.id}` } }, job.id)),
        td(job.type, "hide-narrow"),
        td(statusBadge(job.status)),
        td(progressCell(job, `Progress of job ${job.id}`)),
        td(rate(job.ratePerSec), "num hide-narrow"),
        td(ended(job) ? "—" : duration(job.etaSeconds), "num hide-narrow"),
        td(when(job.createdAt), "hide-narrow"),
      ]);
      return true;
    };
    return body;
  }

  function counter(label, value) {
    return h("div", {}, h("dt", {}, label), h("dd", {}, numbers.format(value || 0)));
  }

  const IMPORT_FAILURES_CAPTION = "Rows of the file that could not be applied, by the line each "
    + "begins on, with the reason (a store the import could not close is named by its id).";

  /** The counters of a job that applies an import's rows. */
  function importCounters(c) {
    return [
      counter("Created", c.created), counter("Updated", c.updated), counter("Unchanged", c.unchanged),
      counter("Closed", c.closed), counter("Invalid", c.invalid), counter("Failed", c.failed),
    ];
  }

  /** A failure's key among a job's failures: its location, or its row of an import's file. */
  function failureKey(f) {
    return f.locationId ? f.locationId : `line-${f.line}`;
  }

  /** Where a failure happened: its location's id, or the line of the import's file. */
  function failurePlace(f) {
    if (f.locationId) return td(f.locationId, "mono");
    return td(f.line === null || f.line === undefined ? "—" : String(f.line));
  }

  function chart(jobId, job) {
    const points = (samples.get(jobId) || []).slice();
    if (job.startedAt) points.unshift({ t: Date.parse(job.startedAt), p: 0 });
    if (job.finishedAt) points.push({ t: Date.parse(job.finishedAt), p: job.percent });
    points.sort((a, b) => a.t - b.t);
    const W = 600, H = 220, L = 48, R = 16, T = 12, B = 34;
    const start = points.length ? points[0].t : Date.now();
    const end = points.length ? Math.max(points[points.length - 1].t, start + 1000) : start + 1000;
    const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
    const y = (p) => T + (1 - p / 100) * (H - T - B);
    const last = points.length ? points[points.length - 1].p : 0;
    const summary = points.length
      ? `Progress over time: ${oneDecimal.format(last)}% after ${duration((end - start) / 1000)}.`
      : "Progress over time: no progress yet.";
    const grid = [0, 25, 50, 75, 100].map((p) => [
      svg("line", { class: "grid", x1: L, x2: W - R, y1: y(p), y2: y(p) }),
      svg("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" }, `${p}%`),
    ]);
    const ticks = [0, 0.5, 1].map((f) => svg("text", {
      x: L + f * (W - L - R), y: H - 10, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle",
    }, duration(((end - start) / 1000) * f)));
    const path = points.map((pt) => `${x(pt.t).toFixed(1)},${y(pt.p).toFixed(1)}`).join(" ");
    return h("figure", { class: "chart" },
      svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary },
        grid, ticks,
        svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
        svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
        points.length > 1 ? svg("polyline", { class: "line", points: path }) : null,
        points.length ? svg("circle", { class: "dot", r: 4, cx: x(points[points.length - 1].t), cy: y(last) }) : null),
      h("figcaption", { class: "help" }, summary, " Time since the job started."));
  }

  function deliveriesTable(caption, onRedeliver) {
    const tbody = h("tbody");
    const empty = h("p", { class: "empty" }, "No deliveries yet.");
    const wrap = h("div", { class: "table-wrap" },
      h("table", {},
        h("caption", {}, caption),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Event"), h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col", class: "num" }, "Attempts"),
          h("th", { scope: "col" }, "Last answer"),
          h("th", { scope: "col", class: "hide-narrow" }, "Last attempt"),
          h("th", { scope: "col", class: "hide-narrow" }, "Next attempt"),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
        tbody),
      empty);
    const update = (items) => {
      empty.hidden = items.length > 0;
      syncRows(tbody, items, (d) => d.id, (d) => [
        td(h("span", { title: d.eventId }, d.eventType)),
        td(statusBadge(d.status)),
        td(numbers.format(d.attempts), "num"),
        td(d.lastStatusCode ? `HTTP ${d.lastStatusCode}` : d.lastError || "—"),
        td(when(d.lastAttemptAt), "hide-narrow"),
        td(when(d.nextAttemptAt), "hide-narrow"),
        td(h("button", {
          type: "button", class: "secondary",
          "aria-label": `Redeliver ${d.eventType} delivery ${d.id}`,
          dataset: { focusKey: `redeliver-${d.id}` },
          onclick: (event) => onRedeliver(d, event.currentTarget),
        }, "Redeliver")),
      ]);
    };
    return { element: wrap, update };
  }

  async function redeliver(delivery, button, after) {
    button.disabled = true;
    try {
      await api("POST", `webhooks/${delivery.subscriptionId}/deliveries/${delivery.id}/redeliver`);
      announce(`Delivery ${delivery.id} queued for redelivery.`);
      clearError();
      await after();
    } catch (e) {
      showError(`Redelivery refused: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function jobView(view, jobId) {
    const heading = h("h1", { tabindex: "-1" }, "Job ", h("span", { class: "mono" }, jobId));
    const summary = h("p", { class: "muted" }, "Loading…");
    const statusLine = h("p", {});
    const progress = h("div", {});
    const counters = h("dl", { class: "counters" });
    const times = h("dl", { class: "kv" });
    const chartBox = h("div", {});
    const notice = h("div", { class: "notice", hidden: true, role: "status" });

    const buttons = {};
    const action = (name, label, cls, run) => {
      buttons[name] = h("button", { type: "button", class: cls, hidden: true, onclick: run }, label);
      return buttons[name];
    };
    let job = null;
    const act = async (verb, done, confirmText) => {
      if (confirmText && !window.confirm(confirmText)) return;
      Object.values(buttons).forEach((b) => { b.disabled = true; });
      try {
        const answer = await api("POST", `jobs/${jobId}/${verb}`);
        clearError();
        if (answer.location && (verb === "undo" || verb === "retry-failures")) {
          const created = answer.location.split("/").pop();
          announce(`${done}: job ${created}.`);
          location.hash = `#/jobs/${created}`;
          return;
        }
        announce(done);
        await view.refresh();
      } catch (e) {
        if (e.status === 409 && e.location) {
          const other = e.location.split("/").pop();
          replace(notice, `${e.message} `, h("a", { href: `#/jobs/${other}` }, `Open job ${other}`));
          notice.hidden = false;
        } else {
          showError(`${verb} refused: ${e.message}`);
        }
      } finally {
        Object.values(buttons).forEach((b) => { b.disabled = false; });
      }
    };
    const actions = h("div", { class: "actions", role: "group", "aria-label": "Job actions" },
      action("pause", "Pause", "secondary", () => act("pause", "Job paused")),
      action("resume", "Resume", "", () => act("resume", "Job resumed")),
      action("cancel", "Cancel job", "danger", () => act("cancel", "Cancellation requested",
        "Cancel this job? Locations already linked stay linked.")),
      action("undo", "Undo", "secondary", () => act("undo", "Undo started",
        "Start a job that unlinks exactly the links this job made?")),
      action("retry-failures", "Retry failures", "", () => act("retry-failures", "Retry started")),
      action("approve", "Approve", "", () => act("approve", "Job approved")),
      action("reject", "Reject", "danger", () => act("reject", "Job rejected",
        "Reject this job? It ends cancelled without touching a location.")));

    // The report: every part of GET /jobs/{id}/report (the token goes in a header, so a
    // plain link cannot fetch it), saved as one CSV file.
    const reportButton = h("button", {
      type: "button", class: "secondary", hidden: true,
      onclick: () => downloadReport(),
    }, "Download report (CSV)");
    let reportUrl = null;
    const downloadReport = async () => {
      reportButton.disabled = true;
      try {
        const parts = [];
        let next = new URL(`jobs/${jobId}/report`, API_ROOT);
        while (next) {
          const response = await fetch(next, {
            headers: { Accept: "text/csv", Authorization: `Bearer ${token()}` },
            cache: "no-store", credentials: "omit", redirect: "error",
          });
          if (!response.ok) {
            const problem = await response.json().catch(() => null);
            throw new Error((problem && problem.detail) || response.statusText);
          }
          const text = await response.text();
          // A part after the first repeats the header: keep one.
          parts.push(parts.length ? text.slice(text.indexOf("\n") + 1) : text);
          const link = (response.headers.get("Link") || "").match(/<([^>]+)>\s*;\s*rel="next"/);
          next = link ? new URL(link[1], API_ROOT) : null;
        }
        // The previous download's file is released when the next is made (revoked at once,
        // a download may not have read it yet).
        if (reportUrl) URL.revokeObjectURL(reportUrl);
        reportUrl = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
        const save = h("a", { href: reportUrl, download: `job-${jobId}-report.csv`, hidden: true });
        document.body.append(save);
        save.click();
        save.remove();
        announce("Report downloaded.");
        clearError();
      } catch (e) {
        showError(`Report refused: ${e.message}`);
      } finally {
        reportButton.disabled = false;
      }
    };
    actions.append(reportButton);

    // Failures: paginated with the API's cursors (a stack of the pages seen).
    const failureRows = h("tbody");
    const failuresEmpty = h("p", { class: "empty" }, "No failures.");
    const pageLabel = h("span", { class: "muted" });
    const cursors = [null];
    let failurePage = 0;
    let failuresSeen = -1;
    const prev = h("button", { type: "button", class: "secondary", onclick: () => loadFailures(failurePage - 1) }, "Previous page");
    const next = h("button", { type: "button", class: "secondary", onclick: () => loadFailures(failurePage + 1) }, "Next page");
    const loadFailures = async (page) => {
      const cursor = cursors[page];
      const query = `limit=${FAILURES_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const { data } = await api("GET", `jobs/${jobId}/failures?${query}`);
      failurePage = page;
      cursors.length = page + 1;
      if (data.nextCursor) cursors.push(data.nextCursor);
      const items = data.items || [];
      failuresEmpty.hidden = items.length > 0 || page > 0;
      syncRows(failureRows, items, failureKey, (f) => [
        failurePlace(f), td(f.reason), td(numbers.format(f.attempts), "num"),
      ]);
      prev.disabled = page === 0;
      next.disabled = !data.nextCursor;
      pageLabel.textContent = `Page ${page + 1}`;
    };
    // An import's failures are rows of its file: the first column is their line.
    const failuresCaption = h("caption", {}, "Locations that could not be done, with the reason.");
    const failuresPlace = h("th", { scope: "col" }, "Location");
    const failures = h("section", { "aria-labelledby": "failures-title" },
      h("h2", { id: "failures-title" }, "Failures"),
      h("div", { class: "table-wrap" },
        h("table", {},
          failuresCaption,
          h("thead", {}, h("tr", {},
            failuresPlace, h("th", { scope: "col" }, "Reason"),
            h("th", { scope: "col", class: "num" }, "Attempts"))),
          failureRows),
        failuresEmpty),
      h("nav", { class: "pager", "aria-label": "Failure pages" }, prev, pageLabel, next));

    const loadDeliveries = async () => {
      const { data } = await api("GET", `jobs/${jobId}/deliveries?limit=100`);
      deliveries.update(data.items || []);
    };
    const deliveries = deliveriesTable("The webhook deliveries of this job's events, newest first.",
      (d, button) => redeliver(d, button, loadDeliveries));
    let tick = 0;
    let lastStatus = null;

    view.refresh = async () => {
      let answer;
      try {
        answer = await api("GET", `jobs/${jobId}`);
      } catch (e) {
        if (e.status === 404) {
          replace(summary, "No such job: it does not exist, or it is not one of your brand's.");
          [statusLine, progress, counters, times, chartBox, actions, failures, deliveries.element]
            .forEach((el) => { el.hidden = true; });
          return false;
        }
        throw e;
      }
      job = answer.data;
      const c = job.counters;
      const list = samples.get(jobId) || [];
      if (!ended(job)) list.push({ t: Date.now(), p: job.percent });
      samples.set(jobId, list.slice(-600));

      replaceOnChange(summary, `${job.type} ${job.offerId} ${job.importId} ${job.parentJobId}`,
        job.offerId ? [`${job.type} of offer `, h("a", { href: `#/offers/${job.offerId}`, class: "mono" }, job.offerId)]
          : job.importId ? [`${job.type} of import `, h("a", { href: `#/imports/${job.importId}`, class: "mono" }, job.importId)]
            : job.type,
        job.parentJobId ? [" (from job ", h("a", { href: `#/jobs/${job.parentJobId}`, class: "mono" }, job.parentJobId), ")"] : null);
      replace(statusLine, "Status: ", statusBadge(job.status),
        job.status === "PAUSED" ? ` — ${numbers.format(job.chunksParked)} chunks parked` : null,
        job.status === "SCHEDULED" ? ` — starts at ${when(job.notBefore)}` : null,
        job.status === "AWAITING_APPROVAL"
          ? ` — created by ${job.createdBy}: another caller of the brand must approve it` : null,
        job.approvedBy ? ` — approved by ${job.approvedBy}` : null);
      replace(progress, progressCell(job, "Job progress"),
        h("p", { class: "muted" }, `${rate(job.ratePerSec)}`,
          ended(job) ? "" : ` · ETA ${duration(job.etaSeconds)}`,
          ` · ${numbers.format(job.chunksDone)} of ${numbers.format(job.chunksTotal)} chunks`,
          job.fanoutDone ? "" : " (still paging)"));
      const shown = [counter("Total", c.total), counter("Processed", c.processed)];
      if (importing(job)) {
        shown.push(importCounters(c), counter("Cancelled", c.cancelled));
      } else {
        shown.push(counter("Linked", c.linked), counter("Already linked", c.alreadyLinked),
          counter("Not found", c.notFound), counter("Failed", c.failed), counter("Cancelled", c.cancelled));
      }
      if (job.action === "unlink" || job.action === "reconcile") {
        shown.push(counter("Unlinked", c.unlinked), counter("Not linked", c.notLinked));
      }
      replace(counters, shown);
      if (importing(job)) {
        failuresCaption.textContent = IMPORT_FAILURES_CAPTION;
        failuresPlace.textContent = "Line";
      }
      replace(times,
        h("dt", {}, "Created"), h("dd", {}, when(job.createdAt)),
        h("dt", {}, "Started"), h("dd", {}, when(job.startedAt)),
        h("dt", {}, "Finished"), h("dd", {}, when(job.finishedAt)),
        h("dt", {}, "Paused for"), h("dd", {}, duration(job.pausedSeconds)));
      replace(chartBox, chart(jobId, job));

      const allowed = new Set(job.allowedActions || []);
      for (const [verb, button] of Object.entries(buttons)) button.hidden = !allowed.has(verb);
      reportButton.hidden = !ended(job);

      // An import's invalid rows are failures too.
      const failed = (c.failed || 0) + (c.invalid || 0);
      if (failed !== failuresSeen && failurePage === 0) {
        failuresSeen = failed;
        await loadFailures(0);
      }
      if (job.status !== lastStatus || tick % 5 === 0) await loadDeliveries();
      lastStatus = job.status;
      tick += 1;
      return true;
    };

    return [
      heading, summary, notice, statusLine, progress, actions,
      h("h2", {}, "Counters"), counters,
      h("h2", {}, "Progress over time"), chartBox,
      h("h2", {}, "Times"), times,
      failures,
      h("section", { "aria-labelledby": "deliveries-title" },
        h("h2", { id: "deliveries-title" }, "Webhook deliveries"), deliveries.element),
    ];
  }

  function webhooksView(view) {
    const tbody = h("tbody");
    const empty = h("p", { class: "empty", hidden: true }, "No subscriptions.");
    view.refresh = async () => {
      const brand = brandQuery();
      if (brand === null) {
        empty.textContent = "Name a brand to see its webhooks.";
        empty.hidden = false;
        return false;
      }
      const { data } = await api("GET", `webhooks?limit=100${brand ? `&${brand}` : ""}`);
      const items = data.items || [];
      empty.textContent = "No subscriptions.";
      empty.hidden = items.length > 0;
      syncRows(tbody, items, (s) => s.id, (s) => [
        td(h("a", { href: `#/webhooks/${s.id}`, dataset: { focusKey: `webhook-${s.id}` } }, s.url)),
        td(s.filter && s.filter.eventTypes ? s.filter.eventTypes.join(", ") : "every event"),
        td(s.filter && s.filter.jobId ? h("a", { href: `#/jobs/${s.filter.jobId}`, class: "mono" }, s.filter.jobId) : "any job", "hide-narrow"),
        td(statusBadge(s.status)),
        td(s.description || "—", "hide-narrow"),
        td(when(s.createdAt), "hide-narrow"),
      ]);
      return true;
    };
    return [
      h("h1", { tabindex: "-1" }, "Webhooks"),
      brandPicker(() => poll(view)),
      h("div", { class: "table-wrap" },
        h("table", {},
          h("caption", {}, "The brand's subscriptions, newest first."),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "URL"), h("th", { scope: "col" }, "Events"),
            h("th", { scope: "col", class: "hide-narrow" }, "Job"), h("th", { scope: "col" }, "Status"),
            h("th", { scope: "col", class: "hide-narrow" }, "Description"),
            h("th", { scope: "col", class: "hide-narrow" }, "Created"))),
          tbody),
        empty),
    ];
  }

  function webhookView(view, id) {
    const details = h("dl", { class: "kv" });
    const summary = h("p", { class: "muted" }, "Loading…");
    const load = async () => {
      const { data } = await api("GET", `webhooks/${id}/deliveries?limit=100`);
      deliveries.update(data.items || []);
    };
    const deliveries = deliveriesTable("This subscription's deliveries, newest first.",
      (d, button) => redeliver(d, button, load));
    view.refresh = async () => {
      let sub;
      try {
        sub = (await api("GET", `webhooks/${id}`)).data;
      } catch (e) {
        if (e.status === 404) {
          summary.textContent = "No such subscription: it does not exist, or it is not one of your brand's.";
          deliveries.element.hidden = true;
          return false;
        }
        throw e;
      }
      summary.textContent = sub.description || "";
      const disabled = sub.status === "disabled";
      replace(details,
        h("dt", {}, "URL"), h("dd", {}, sub.url),
        h("dt", {}, "Status"), h("dd", {}, statusBadge(sub.status)),
        ...(disabled ? [h("dt", {}, "Disabled because"), h("dd", { id: "disabled-reason" }, sub.disabledReason || "—")] : []),
        ...(sub.failingSince ? [h("dt", {}, "Failing since"), h("dd", {}, when(sub.failingSince))] : []),
        h("dt", {}, "Events"), h("dd", {}, sub.filter && sub.filter.eventTypes ? sub.filter.eventTypes.join(", ") : "every event"),
        h("dt", {}, "Throttle"), h("dd", {}, sub.rateLimitPerSec ? `at most ${numbers.format(sub.rateLimitPerSec)} a second` : "none"),
        h("dt", {}, "Progress"), h("dd", {}, sub.progressEverySeconds ? `every ${numbers.format(sub.progressEverySeconds)} s` : "not sent"),
        h("dt", {}, "Created"), h("dd", {}, when(sub.createdAt)));
      enableButton.hidden = !disabled;
      testButton.disabled = disabled;
      await load();
      return true;
    };
    const act = async (button, call, done, refused) => {
      button.disabled = true;
      try {
        const result = await call();
        announce(done(result));
        clearError();
        await view.refresh();
      } catch (e) {
        showError(`${refused}: ${e.message}`);
      } finally {
        button.disabled = false;
      }
    };
    const testButton = h("button", {
      type: "button", class: "secondary",
      onclick: (event) => act(event.currentTarget,
        () => api("POST", `webhooks/${id}/test`),
        ({ data }) => `Test event sent (delivery ${data.id}).`,
        "The test event was not sent"),
    }, "Send a test event");
    const enableButton = h("button", {
      type: "button", hidden: true,
      onclick: (event) => act(event.currentTarget,
        () => api("POST", `webhooks/${id}/enable`),
        () => "Subscription enabled: it hears events again.",
        "The subscription was not enabled"),
    }, "Enable");
    // Replay: a time range of the brand's events, counted first (dry run), then sent.
    const since = h("input", { type: "datetime-local", id: "replay-since", step: "1", required: true });
    const until = h("input", { type: "datetime-local", id: "replay-until", step: "1", "aria-describedby": "replay-help" });
    const replayOutcome = h("p", { id: "replay-outcome", role: "status" });
    const range = () => {
      const body = { since: new Date(since.value).toISOString() };
      if (until.value) body.until = new Date(until.value).toISOString();
      return body;
    };
    const replay = async (dryRun, button) => {
      if (!since.value || Number.isNaN(new Date(since.value).getTime())) {
        showError("Give the time the replay starts from.");
        since.focus();
        return;
      }
      await act(button,
        () => api("POST", `webhooks/${id}/replay${dryRun ? "?dryRun=true" : ""}`, range()),
        ({ data }) => {
          const n = `${numbers.format(data.events)} event${data.events === 1 ? "" : "s"}`;
          replayOutcome.textContent = dryRun ? `${n} would be sent again.` : `Replaying ${n}, in order.`;
          return replayOutcome.textContent;
        },
        "Replay refused");
    };
    const countButton = h("button", { type: "button", class: "secondary", onclick: (e) => replay(true, e.currentTarget) }, "Count events");
    const replayForm = h("form", {
      class: "inline-form",
      onsubmit: (event) => { event.preventDefault(); replay(false, event.submitter || countButton); },
    },
    h("div", {}, h("label", { for: "replay-since" }, "Replay from"), since),
    h("div", {}, h("label", { for: "replay-until" }, "until"), until),
    countButton,
    h("button", { type: "submit" }, "Replay"));
    return [
      h("h1", { tabindex: "-1" }, "Webhook ", h("span", { class: "mono" }, id)),
      summary, details,
      h("div", { class: "actions" }, testButton, enableButton),
      h("h2", {}, "Replay"),
      h("p", { id: "replay-help", class: "muted" },
        "Sends the brand's events of a time range (kept 30 days) that this subscription hears again, with their original webhook-id. Until: now when empty."),
      replayForm, replayOutcome,
      h("h2", {}, "Deliveries"), deliveries.element,
    ];
  }

  function locationsView(view, params) {
    // The filters in force: the hash query's (a reload keeps them), as the API takes them.
    const filters = {};
    for (const name of LOCATION_FILTERS) {
      const value = (params.get(name) || "").trim();
      if (value) filters[name] = value;
    }
    if (filters.status !== "active" && filters.status !== "closed") delete filters.status;
    const filtered = Object.keys(filters).length > 0;

    const inputs = {
      status: h("select", { id: "filter-status", name: "status" },
        h("option", { value: "" }, "Any"),
        h("option", { value: "active", selected: filters.status === "active" }, "Active"),
        h("option", { value: "closed", selected: filters.status === "closed" }, "Closed")),
    };
    const field = (name, label) => {
      inputs[name] = h("input", {
        type: "text", id: `filter-${name}`, name, value: filters[name] || "",
        autocomplete: "off", spellcheck: "false", "aria-describedby": "filters-help",
      });
      return h("div", {}, h("label", { for: `filter-${name}` }, label), inputs[name]);
    };
    const form = h("form", {
      class: "inline-form filters", "aria-label": "Filter locations",
      onsubmit: (event) => {
        event.preventDefault();
        const query = new URLSearchParams();
        for (const [name, input] of Object.entries(inputs)) {
          const value = name === "country" ? input.value.trim().toUpperCase() : input.value.trim();
          if (value) query.set(name, value);
        }
        const hash = `#/locations${query.toString() ? `?${query}` : ""}`;
        if (location.hash === hash) {
          pages.reset();
          poll(view);
        } else {
          location.hash = hash;
        }
      },
    },
    h("div", {}, h("label", { for: "filter-status" }, "Status"), inputs.status),
    field("country", "Country"),
    field("city", "City"),
    field("tag", "Tag"),
    field("externalId", "External id"),
    h("button", { type: "submit" }, "Filter"),
    filtered ? h("a", { href: "#/locations" }, "Clear filters") : null);

    const tbody = h("tbody");
    const empty = h("p", { class: "empty", hidden: true }, "No locations.");
    const pages = pager("Location pages", (cursor) => {
      const query = new URLSearchParams({ limit: String(LOCATIONS_PAGE), ...filters });
      if (cursor) query.set("cursor", cursor);
      const brand = brandQuery();
      return api("GET", `locations?${query}${brand ? `&${brand}` : ""}`).then((answer) => answer.data);
    }, (items) => {
      empty.textContent = filtered ? "No location on this page matches." : "No locations.";
      empty.hidden = items.length > 0;
      syncRows(tbody, items, (l) => l.id, (l) => [
        td(l.externalId || "—", "mono"),
        td(l.name || "—"),
        td(l.address, "hide-narrow"),
        td(l.city || "—", "hide-narrow"),
        td(l.country || "—"),
        td(l.tags && l.tags.length ? l.tags.join(", ") : "—", "hide-narrow"),
        td(statusBadge(l.status || "active")),
        td(l.hasOffer ? "yes" : "no"),
      ]);
    });

    view.refresh = async () => {
      if (brandQuery() === null) {
        empty.textContent = "Name a brand to see its locations.";
        empty.hidden = false;
        syncRows(tbody, [], () => "", () => []);
        return false;
      }
      try {
        await pages.refresh();
      } catch (e) {
        if (e.status !== 400) throw e;
        // A filter the API refuses stays refused: say why, and stop asking.
        empty.textContent = `The filter was refused: ${e.message}`;
        empty.hidden = false;
        syncRows(tbody, [], () => "", () => []);
        return false;
      }
      return true;
    };
    return [
      h("h1", { tabindex: "-1" }, "Locations"),
      h("p", {}, h("a", { href: "#/imports/new" }, "Import stores"),
        " from a CSV or NDJSON file: each row creates or updates the store with its external id."),
      brandPicker(() => { pages.reset(); poll(view); }),
      form,
      h("p", { id: "filters-help", class: "help" },
        "Each field is one value, compared exactly as stored (a country is two letters, such as GB). ",
        `A page reads ${LOCATIONS_PAGE} locations; with a filter it holds the matching ones among them, `,
        "so it may be short (even empty) and still have a next page."),
      h("div", { class: "table-wrap" },
        h("table", {},
          h("caption", {}, filtered ? "The brand's locations that match the filter; updates every second."
            : "The brand's locations, the active ones first; updates every second."),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "External id"), h("th", { scope: "col" }, "Name"),
            h("th", { scope: "col", class: "hide-narrow" }, "Address"),
            h("th", { scope: "col", class: "hide-narrow" }, "City"), h("th", { scope: "col" }, "Country"),
            h("th", { scope: "col", class: "hide-narrow" }, "Tags"), h("th", { scope: "col" }, "Status"),
            h("th", { scope: "col" }, "Has an offer"))),
          tbody),
        empty),
      pages.element,
    ];
  }

  /**
   * PUTs an import's file to its upload URL. The URL is the upload's authority: no bearer
   * token goes with it (on AWS it is S3's, which answers XML when it refuses).
   */
  async function upload(url, file) {
    let response;
    try {
      response = await fetch(url, { method: "PUT", body: file, cache: "no-store", credentials: "omit", redirect: "error" });
    } catch (e) {
      // Its origin only: the query holds the upload's secret.
      throw new ApiError(0, `${new URL(url).origin} could not be reached (${e.message})`);
    }
    if (response.ok) return;
    const text = await response.text();
    let detail = null;
    try {
      const data = JSON.parse(text);
      detail = data && (data.detail || data.title);
    } catch (_) {
      const message = new DOMParser().parseFromString(text, "application/xml").querySelector("Message");
      detail = message ? message.textContent : null;
    }
    throw new ApiError(response.status, detail || `${response.status} ${response.statusText}`, response);
  }

  function importFormView(view) {
    const format = h("select", { id: "import-format", name: "format" },
      h("option", { value: "csv" }, "CSV"),
      h("option", { value: "ndjson" }, "NDJSON (one JSON object a line)"));
    const file = h("input", {
      type: "file", id: "import-file", name: "file", required: true,
      accept: ".csv,.ndjson,.jsonl,text/csv", "aria-describedby": "import-file-help",
      // The name's extension chooses the format; the select can still say otherwise.
      onchange: () => {
        const chosen = file.files[0];
        const extension = chosen ? chosen.name.split(".").pop().toLowerCase() : "";
        if (IMPORT_FORMATS[extension]) format.value = IMPORT_FORMATS[extension];
      },
    });
    const closeMissing = h("input", {
      type: "checkbox", id: "import-close", name: "closeMissing", "aria-describedby": "import-close-help",
    });
    const target = h("p", { class: "help", hidden: true });
    const progressText = h("p", { class: "muted", hidden: true });
    const submit = h("button", { type: "submit" }, "Import");
    const done = (text) => {
      submit.disabled = false;
      progressText.hidden = true;
      if (text) showError(text);
    };
    const form = h("form", {
      "aria-labelledby": "import-form-title",
      onsubmit: async (event) => {
        event.preventDefault();
        const chosen = file.files[0];
        if (!chosen) {
          showError("Choose the file to import.");
          file.focus();
          return;
        }
        const body = { format: format.value, closeMissing: closeMissing.checked };
        if (isAdmin()) {
          const brand = sessionStorage.getItem(BRAND_KEY);
          if (!brand) {
            showError("Name the brand whose stores the file holds.");
            $("brand-input").focus();
            return;
          }
          body.brandId = brand;
        }
        if (body.closeMissing
          && !window.confirm("Close every active store of the brand that the file does not name?")) return;
        clearError();
        submit.disabled = true;
        progressText.textContent = `Sending ${chosen.name}…`;
        progressText.hidden = false;
        let made;
        try {
          made = (await api("POST", "imports", body)).data;
        } catch (e) {
          done(`The import was not made: ${e.message}`);
          return;
        }
        try {
          await upload(made.uploadUrl, chosen);
        } catch (e) {
          done(e.status ? `The file was refused: ${e.message}` : `The file was not sent: ${e.message}`);
          return;
        }
        done();
        announce(`File sent: import ${made.id} has started.`);
        location.hash = `#/imports/${made.id}`;
      },
    },
    h("div", {}, h("label", { for: "import-file" }, "File"), file,
      h("p", { id: "import-file-help", class: "help" },
        "CSV: a header row naming some of externalId, name, address, city, region, postcode, country, ",
        "tags (separated by ;) and status — externalId and address are required — then one store a row. ",
        "NDJSON: one JSON object a line with the same fields, tags an array. Each row creates or updates ",
        "the brand's store with its external id; a row that breaks a rule is listed with its line and ",
        "reason, and the rest are applied.")),
    h("div", {}, h("label", { for: "import-format" }, "Format"), format),
    h("div", { class: "check" }, closeMissing, h("label", { for: "import-close" }, "Close stores the file does not name")),
    h("p", { id: "import-close-help", class: "help" },
      "Once every row is applied, the brand's active stores that no row names are closed (a closed ",
      "store leaves every offer). Unchecked, the file only adds and changes stores."),
    target,
    h("div", { class: "actions" }, submit),
    progressText);

    view.refresh = async () => {
      if (!isAdmin()) return false;
      const brand = sessionStorage.getItem(BRAND_KEY);
      target.textContent = brand ? `The stores go to brand ${brand}.` : "Name the brand whose stores the file holds.";
      target.hidden = false;
      return false;
    };
    return [
      h("h1", { tabindex: "-1" }, "Import stores"),
      brandPicker(() => poll(view)),
      h("section", { "aria-labelledby": "import-form-title" },
        h("h2", { id: "import-form-title" }, "The file"), form),
    ];
  }

  function importView(view, importId) {
    const summary = h("p", { class: "muted" }, "Loading…");
    const details = h("dl", { class: "kv" });
    const jobLink = h("p", {});
    const statusLine = h("p", {});
    const progress = h("div", {});
    const counters = h("dl", { class: "counters" });
    const jobSection = h("section", { "aria-labelledby": "import-job-title", hidden: true },
      h("h2", { id: "import-job-title" }, "Its job"), jobLink, statusLine, progress, counters);

    let jobId = null;
    const rows = h("tbody");
    const rowsEmpty = h("p", { class: "empty", hidden: true }, "No invalid rows.");
    const pages = pager("Invalid row pages", (cursor) => {
      const query = `limit=${FAILURES_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      return api("GET", `jobs/${jobId}/failures?${query}`).then((answer) => answer.data);
    }, (items) => {
      rowsEmpty.hidden = items.length > 0;
      syncRows(rows, items, failureKey, (f) => [failurePlace(f), td(f.reason)]);
    });
    const rowsSection = h("section", { "aria-labelledby": "invalid-title", hidden: true },
      h("h2", { id: "invalid-title" }, "Invalid rows"),
      h("div", { class: "table-wrap" },
        h("table", {},
          h("caption", {}, IMPORT_FAILURES_CAPTION),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Line"), h("th", { scope: "col" }, "Reason"))),
          rows),
        rowsEmpty),
      pages.element);

    let imported = null; // the import, once its file has arrived (it changes no more)
    let failuresSeen = -1;
    view.refresh = async () => {
      let imp = imported;
      if (!imp) {
        try {
          imp = (await api("GET", `imports/${importId}`)).data;
        } catch (e) {
          if (e.status === 404) {
            summary.textContent = "No such import: it does not exist, or it is not one of your brand's.";
            details.hidden = true;
            return false;
          }
          throw e;
        }
        replaceOnChange(details, JSON.stringify(imp),
          isAdmin() ? [h("dt", {}, "Brand"), h("dd", { class: "mono" }, imp.brandId)] : null,
          h("dt", {}, "State"), h("dd", {}, statusBadge(imp.state)),
          h("dt", {}, "Format"), h("dd", {}, imp.format === "ndjson" ? "NDJSON" : "CSV"),
          h("dt", {}, "Closes stores the file does not name"), h("dd", {}, imp.closeMissing ? "yes" : "no"),
          h("dt", {}, "Created"), h("dd", {}, when(imp.createdAt)),
          h("dt", {}, "Upload URL expires"), h("dd", {}, when(imp.expiresAt)),
          h("dt", {}, "File arrived"), h("dd", {}, when(imp.startedAt)));
      }
      if (!imp.jobId) {
        summary.textContent = imp.state === "expired"
          ? "The upload URL expired before a file arrived: nothing was imported."
          : "Waiting for the file.";
        return imp.state !== "expired";
      }
      imported = imp;
      jobId = imp.jobId;
      const job = (await api("GET", `jobs/${jobId}`)).data;
      const c = job.counters;
      summary.textContent = ended(job) ? "The file has been imported." : "The file is being imported.";
      replaceOnChange(jobLink, jobId, "Job ", h("a", { href: `#/jobs/${jobId}`, class: "mono" }, jobId));
      replace(statusLine, "Status: ", statusBadge(job.status));
      replace(progress, progressCell(job, "Import progress"),
        h("p", { class: "muted" }, rate(job.ratePerSec), ended(job) ? "" : ` · ETA ${duration(job.etaSeconds)}`));
      replace(counters, counter("Total", c.total), importCounters(c));
      jobSection.hidden = false;
      rowsSection.hidden = false;
      const failed = (c.failed || 0) + (c.invalid || 0);
      if (failed !== failuresSeen) {
        await pages.refresh();
        failuresSeen = failed;
      }
      // An ended job's counters and rows change no more.
      return !ended(job);
    };
    return [
      h("h1", { tabindex: "-1" }, "Import ", h("span", { class: "mono" }, importId)),
      summary, details, jobSection, rowsSection,
      h("p", {}, h("a", { href: "#/imports/new" }, "Import another file")),
    ];
  }

  function offersView(view) {
    const tbody = h("tbody");
    const empty = h("p", { class: "empty", hidden: true }, "No offers yet.");
    const pages = pager("Offer pages", (cursor) => {
      const brand = brandQuery();
      const query = `limit=${OFFERS_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}${brand ? `&${brand}` : ""}`;
      return api("GET", `offers?${query}`).then((answer) => answer.data);
    }, (items) => {
      empty.textContent = "No offers yet.";
      empty.hidden = items.length > 0;
      syncRows(tbody, items, (o) => o.id, (o) => [
        td(h("a", { href: `#/offers/${o.id}`, dataset: { focusKey: `offer-${o.id}` } }, o.name)),
        td(o.id, "mono hide-narrow"),
        td(numbers.format(o.locationsTotal), "num"),
      ]);
    });
    view.refresh = async () => {
      if (brandQuery() === null) {
        empty.textContent = "Name a brand to see its offers.";
        empty.hidden = false;
        syncRows(tbody, [], () => "", () => []);
        return false;
      }
      await pages.refresh();
      return true;
    };
    return [
      h("h1", { tabindex: "-1" }, "Offers"),
      brandPicker(() => { pages.reset(); poll(view); }),
      h("div", { class: "table-wrap" },
        h("table", {},
          h("caption", {}, "The brand's offers in id order, with how many locations carry each; updates every second."),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "hide-narrow" }, "Offer id"),
            h("th", { scope: "col", class: "num" }, "Locations"))),
          tbody),
        empty),
      pages.element,
    ];
  }

  /** A rule's `where`, short: `{ country: [GB], tags: [drive-thru] }` (`{}`: every active location). */
  function whereText(where) {
    const fields = Object.entries(where || {})
      .filter(([, values]) => Array.isArray(values) && values.length > 0)
      .map(([field, values]) => `${field}: [${values.join(", ")}]`);
    return fields.length ? `{ ${fields.join(", ")} }` : "{ } (every active location)";
  }

  function offerView(view, offerId) {
    const summary = h("p", { class: "muted" }, "Loading…");
    const details = h("dl", { class: "kv" });
    const ruleFacts = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const notice = h("div", { class: "notice", hidden: true });
    const driftCounters = h("dl", { class: "counters" });
    const driftWhen = h("p", { class: "help" });
    const driftSection = h("section", { "aria-labelledby": "drift-title", hidden: true },
      h("h2", { id: "drift-title" }, "Drift"), driftCounters, driftWhen,
      h("p", { class: "help" }, "Missing: active locations the rule matches that do not carry the offer. ",
        "Extra: locations carrying it that the rule does not want. Counting reads every location of the ",
        "brand, so it is done again when the rule is set or the offer's count of locations moves, ",
        `and otherwise every ${DRIFT_LATE_MS / 1000} seconds.`));

    const removeButton = h("button", {
      type: "button", class: "danger", hidden: true,
      onclick: async () => {
        if (!window.confirm("Remove the rule? The offer's links stay as they are.")) return;
        removeButton.disabled = true;
        try {
          await api("DELETE", `offers/${offerId}/rule`);
          clearError();
          replace(notice, "Rule removed: the offer's links stay as they are.");
          notice.hidden = false;
          announce("Rule removed.");
        } catch (e) {
          showError(`The rule was not removed: ${e.message}`);
          return;
        } finally {
          removeButton.disabled = false;
        }
        view.refresh().catch(() => {}); // the next poll reports a failure
      },
    }, "Remove rule");

    // The form to set the rule: comma-separated values, an empty field does not narrow.
    const inputs = {};
    const field = (name, label) => {
      inputs[name] = h("input", {
        type: "text", id: `rule-${name}`, name, autocomplete: "off", spellcheck: "false",
        "aria-describedby": "rule-help",
      });
      return h("div", {}, h("label", { for: `rule-${name}` }, label), inputs[name]);
    };
    let edited = false;
    let filledFrom = null; // the setAt of the rule the inputs were filled from
    const setButton = h("button", { type: "submit" }, "Set rule");
    const form = h("form", {
      class: "inline-form", "aria-labelledby": "set-rule-title",
      oninput: () => { edited = true; },
      onsubmit: async (event) => {
        event.preventDefault();
        const where = {};
        for (const [name, input] of Object.entries(inputs)) {
          const values = input.value.split(",").map((v) => v.trim()).filter(Boolean);
          if (values.length) where[name] = name === "country" ? values.map((v) => v.toUpperCase()) : values;
        }
        if (!Object.keys(where).length
          && !window.confirm("With every field empty the offer goes on every active location of the brand. Set this rule?")) return;
        setButton.disabled = true;
        try {
          const { data } = await api("PUT", `offers/${offerId}/rule`, { where });
          clearError();
          edited = false;
          filledFrom = data.rule.setAt;
          replace(notice, "Rule set. Its ",
            h("a", { href: `#/jobs/${data.job.id}` }, "reconcile job ", h("span", { class: "mono" }, data.job.id)),
            " brings the offer's links in line with it.");
          notice.hidden = false;
          announce(`Rule set: reconcile job ${data.job.id} started.`);
        } catch (e) {
          if (e.status === 409 && e.location) {
            const other = e.location.split("/").pop();
            replace(notice, `${e.message} `, h("a", { href: `#/jobs/${other}` }, `Open job ${other}`));
            notice.hidden = false;
          } else {
            showError(`The rule was not set: ${e.message}`);
          }
          return;
        } finally {
          setButton.disabled = false;
        }
        view.refresh().catch(() => {}); // the next poll reports a failure
      },
    },
    field("country", "Countries"), field("city", "Cities"), field("tags", "Tags"),
    setButton,
    h("p", { id: "rule-help", class: "help" },
      "Comma-separated. A location matches when it is in one of the countries and one of the cities ",
      "and carries any of the tags; an empty field does not narrow. Setting the rule here replaces it ",
      "whole (region, postcode and external-id lists set through the API are dropped)."));

    let counted = null; // { setAt, total, at }: the rule, the offer's count and the time of the count shown
    const countDrift = async (rule, offer) => {
      const now = Date.now();
      const due = !counted || counted.setAt !== rule.setAt
        || (counted.total !== offer.locationsTotal && now - counted.at >= DRIFT_SOON_MS)
        || now - counted.at >= DRIFT_LATE_MS;
      if (!due) return;
      let drift;
      try {
        drift = (await api("GET", `offers/${offerId}/drift`)).data;
      } catch (e) {
        if (e.status === 404) return; // the rule went meanwhile: the next refresh says so
        throw e;
      }
      counted = { setAt: rule.setAt, total: offer.locationsTotal, at: now };
      replace(driftCounters, counter("Missing", drift.missing), counter("Extra", drift.extra));
      driftWhen.textContent = `Counted at ${new Date(now).toLocaleTimeString()}.`;
      driftSection.hidden = false;
    };

    const ruleSection = h("section", { "aria-labelledby": "rule-title" },
      h("h2", { id: "rule-title" }, "Standing rule"), ruleFacts,
      h("div", { class: "actions" }, removeButton), notice);
    const setSection = h("section", { "aria-labelledby": "set-rule-title" },
      h("h2", { id: "set-rule-title" }, "Set the rule"), form);
    view.refresh = async () => {
      let offer;
      try {
        offer = (await api("GET", `offers/${offerId}`)).data;
      } catch (e) {
        if (e.status === 404) {
          summary.textContent = "No such offer: it does not exist, or it is not one of your brand's.";
          [details, ruleSection, driftSection, setSection].forEach((el) => { el.hidden = true; });
          return false;
        }
        throw e;
      }
      let rule = null;
      try {
        rule = (await api("GET", `offers/${offerId}/rule`)).data;
      } catch (e) {
        if (e.status !== 404) throw e;
      }
      summary.textContent = offer.name;
      replace(details,
        h("dt", {}, "Offer id"), h("dd", { class: "mono" }, offer.id),
        h("dt", {}, "Locations carrying it"), h("dd", {}, numbers.format(offer.locationsTotal)));
      removeButton.hidden = !rule;
      if (!rule) {
        replaceOnChange(ruleFacts, "none",
          h("p", {}, "No rule: the offer's links change only through jobs and direct links."));
        driftSection.hidden = true;
        counted = null;
        return true;
      }
      replaceOnChange(ruleFacts, `${rule.setAt} ${JSON.stringify(rule.where)}`,
        h("dl", { class: "kv" },
          h("dt", {}, "Where"), h("dd", {}, h("code", {}, whereText(rule.where))),
          h("dt", {}, "Set"), h("dd", {}, when(rule.setAt))));
      if (!edited && filledFrom !== rule.setAt) {
        filledFrom = rule.setAt;
        for (const [name, input] of Object.entries(inputs)) input.value = (rule.where[name] || []).join(", ");
      }
      await countDrift(rule, offer);
      return true;
    };
    return [
      h("h1", { tabindex: "-1" }, "Offer ", h("span", { class: "mono" }, offerId)),
      summary, details, ruleSection, driftSection, setSection,
    ];
  }

  function adminView(view) {
    const facts = h("dl", { class: "kv" });
    const tbody = h("tbody");
    const empty = h("p", { class: "empty" }, "No worker runs in this process (on AWS each Lambda instance reports its rate in its metrics).");
    const input = h("input", { type: "number", id: "budget-input", min: "0", step: "any", inputmode: "decimal", required: true, "aria-describedby": "budget-help" });
    const form = h("form", {
      class: "inline-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const value = Number(input.value);
        if (input.value === "" || !Number.isFinite(value) || value < 0) {
          showError("The write budget is a number of writes per second, 0 or more.");
          input.focus();
          return;
        }
        try {
          await api("PUT", "admin/write-budget", { writesPerSec: value });
          announce(`Write budget set to ${value === 0 ? "unlimited" : `${numbers.format(value)}/s`}.`);
          clearError();
          await view.refresh();
        } catch (e) {
          showError(`The budget was not changed: ${e.message}`);
        }
      },
    },
    h("div", {}, h("label", { for: "budget-input" }, "New write budget (writes per second)"), input),
    h("button", { type: "submit" }, "Set budget"),
    h("p", { id: "budget-help", class: "help" }, "0 means unlimited. Every worker applies it within its refresh interval."));
    view.refresh = async () => {
      let data;
      try {
        data = (await api("GET", "admin/write-budget")).data;
      } catch (e) {
        if (e.status === 403) {
          replace(facts, h("dt", {}, "Access"), h("dd", {}, "Administrators only."));
          form.hidden = true;
          return false;
        }
        throw e;
      }
      replace(facts,
        h("dt", {}, "In force"), h("dd", {}, data.writesPerSec === 0 ? "unlimited" : `${numbers.format(data.writesPerSec)} writes/s`),
        h("dt", {}, "Source"), h("dd", {}, data.source),
        h("dt", {}, "Workers re-read it every"), h("dd", {}, duration(data.refreshSeconds)));
      const workers = data.workers || [];
      empty.hidden = workers.length > 0;
      syncRows(tbody, workers, (w) => w.worker, (w) => [td(w.worker), td(rate(w.writesPerSec), "num")]);
      return true;
    };
    return [
      h("h1", { tabindex: "-1" }, "Write budget"), facts, form,
      h("h2", {}, "Live rates"),
      h("div", { class: "table-wrap" },
        h("table", {},
          h("caption", {}, "Catalog writes per second each worker is allowed now."),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Worker"), h("th", { scope: "col", class: "num" }, "Writes/s"))),
          tbody),
        empty),
    ];
  }

  // --- routing and sign-in -----------------------------------------------------------------

  function takeTokenFromFragment() {
    const match = location.hash.match(/^#token=([^&]+)/);
    if (!match) return;
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    // The token leaves the address bar (and the history) at once.
    history.replaceState(null, "", `${location.pathname}${location.search}#/jobs`);
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(BRAND_KEY);
    if (current) current.stopped = true;
    render();
    if (reason) showError(reason);
  }

  function render() {
    if (current) current.stopped = true;
    clearTimeout(timer);
    const signedIn = Boolean(token());
    $("signin").hidden = signedIn;
    $("nav").hidden = !signedIn;
    $("who").hidden = !signedIn;
    const view = $("view");
    view.hidden = !signedIn;
    if (!signedIn) {
      view.replaceChildren();
      return;
    }
    const c = claims();
    $("who-text").textContent = isAdmin()
      ? `administrator ${c.sub || ""}`
      : `brand ${c.brand_id || c.sub || ""}`;
    $("nav-admin").hidden = !isAdmin();

    // `#/section/id?query`: the query holds a page's own state (the locations' filters).
    const hash = location.hash.replace(/^#\/?/, "");
    const mark = hash.indexOf("?");
    const parts = (mark < 0 ? hash : hash.slice(0, mark)).split("/").filter(Boolean);
    const params = new URLSearchParams(mark < 0 ? "" : hash.slice(mark + 1));
    const section = parts[0] || "jobs";
    // The import pages belong to the locations section.
    const navSection = section === "imports" ? "locations" : section;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.section === navSection) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    current = { stopped: false, refresh: async () => false };
    let content;
    if (section === "jobs" && parts[1]) content = jobView(current, parts[1]);
    else if (section === "webhooks" && parts[1]) content = webhookView(current, parts[1]);
    else if (section === "webhooks") content = webhooksView(current);
    else if (section === "locations") content = locationsView(current, params);
    else if (section === "imports" && parts[1] && parts[1] !== "new") content = importView(current, parts[1]);
    else if (section === "imports") content = importFormView(current);
    else if (section === "offers" && parts[1]) content = offerView(current, parts[1]);
    else if (section === "offers") content = offersView(current);
    else if (section === "admin") content = adminView(current);
    else content = jobsView(current);
    replace(view, content);
    document.title = `${view.querySelector("h1").textContent} · bulklink console`;
    view.querySelector("h1").focus();
    poll(current);
  }

  function start() {
    takeTokenFromFragment();
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("token-input");
      const value = input.value.trim().replace(/^Bearer\s+/i, "");
      if (value.split(".").length !== 3) {
        showError("That is not a JWT: a token has three parts separated by dots.");
        input.focus();
        return;
      }
      input.value = "";
      sessionStorage.setItem(TOKEN_KEY, value);
      clearError();
      if (!location.hash || location.hash === "#") location.hash = "#/jobs";
      render();
    });
    $("sign-out").addEventListener("click", () => signOut());
    window.addEventListener("hashchange", () => {
      takeTokenFromFragment();
      clearError();
      render();
    });
    render();
  }

  start();
})();
