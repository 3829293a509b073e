// The console, driven in a real Chromium (Debian's, headless) by playwright-core against a
// real `bulklink serve`. Run by scripts/console.sh, which starts the server and passes:
//   API           the server's base URL (http://127.0.0.1:PORT)
//   TOKEN_A       a token of brand A (the brand whose jobs are watched)
//   TOKEN_B       a token of brand B (which must see none of A's)
//   TOKEN_C       a token of brand C (a small estate of named stores: locations, offers, a rule)
//   TOKEN_D       a token of brand D (an empty estate, filled by importing files)
//   TOKEN_ADMIN   an administrator's token
//   FAIL_ID       a location id the server fails every link write to (--fail-links-to)
//   SHOTS         where screenshots go
//   MODE          "full" (the embedded server) or "smoke" (serve --backend aws on moto)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   NODE_MODULES  where playwright-core and axe-core are installed (default: beside this file)
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const API = env("API");
const TOKEN_A = env("TOKEN_A");
const SHOTS = env("SHOTS");
const MODE = process.env.MODE || "full";
const CONSOLE = `${API}/console/`;
const WAIT = 90_000;
mkdirSync(SHOTS, { recursive: true });
// The packages live outside the source tree (scripts/console.sh installs them under target/).
const requirePackage = process.env.NODE_MODULES
  ? createRequire(path.join(process.env.NODE_MODULES, "..", "package.json"))
  : createRequire(import.meta.url);
const { chromium } = requirePackage("playwright-core");
const axeSource = readFileSync(requirePackage.resolve("axe-core/axe.min.js"), "utf8");

let stepName = "start";
// The pages that must log no console error at all: checked at every step, so an error is
// reported at the step that caused it.
const clean = [];
const step = (name) => {
  for (const page of clean) {
    const unexpected = page.errors.filter((e) => !(page.expected && page.expected(e)));
    assert.deepEqual(unexpected, [], `console errors before step "${name}"`);
  }
  stepName = name;
  console.log(`-- ${name}`);
};

// --- the API, as a brand (what a client program does beside the console) ---------------------

async function call(token, method, path, body) {
  const response = await fetch(`${API}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return data;
}

async function seedBrand(token, offers, locations, extra = []) {
  const ids = [];
  for (let i = 0; i < offers; i += 1) {
    ids.push((await call(token, "POST", "/offers", { name: `offer ${i + 1}` })).id);
  }
  for (let start = 0; start < locations; start += 100) {
    const batch = [];
    for (let n = start; n < Math.min(locations, start + 100); n += 1) batch.push({ address: `${n} Main Street` });
    await call(token, "POST", "/locations", batch);
  }
  for (const location of extra) await call(token, "POST", "/locations", location);
  return ids;
}

const startJob = async (token, offer) => (await call(token, "POST", `/offers/${offer}/link-all-locations`)).id;

// --- a webhook receiver on loopback ------------------------------------------------------------

function receiver(status = 200) {
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => { body += chunk; });
    req.on("end", () => {
      requests.push({ id: req.headers["webhook-id"], body });
      res.writeHead(status, { "Content-Type": "text/plain" }).end("ok");
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({
      url: `http://127.0.0.1:${server.address().port}/hook`,
      requests,
      close: () => server.close(),
    }));
  });
}

async function until(what, check, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// --- the browser -------------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // No background traffic: the machine's network is closed and tests talk only to loopback.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-features=Translate,OptimizationHints,MediaRouter"],
});

/** A page in a fresh context, every console error and page error it logs recorded. */
async function open(name, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`${name}: console error: ${message.text()} (${message.location().url})`);
  });
  page.on("pageerror", (error) => errors.push(`${name}: page error: ${error.message}`));
  page.on("dialog", (dialog) => dialog.accept());
  // Nothing but this server: any other request fails the test.
  const foreign = [];
  await context.route((url) => !url.href.startsWith(`${API}/`) && !url.href.startsWith("data:"), (route) => {
    foreign.push(route.request().url());
    return route.abort();
  });
  return { context, page, errors, foreign };
}

async function signIn(page, token) {
  await page.goto(CONSOLE);
  await page.getByLabel("Bearer token").fill(token);
  await page.getByRole("button", { name: "Use this token" }).click();
  await page.getByRole("heading", { name: "Jobs", level: 1 }).waitFor();
}

const row = (page, id) => page.locator(`tr[data-key="${id}"]`);

async function jobRowReads(page, id, status) {
  await row(page, id).locator(".status", { hasText: new RegExp(`^${status}$`) }).waitFor({ timeout: WAIT });
}

async function jobPageReads(page, status) {
  await page.locator("main p", { hasText: "Status:" }).locator(".status", { hasText: new RegExp(`^${status}$`) })
    .waitFor({ timeout: WAIT });
}

// The job page's buttons, by the action each asks of the API.
const ACTION_BUTTONS = {
  cancel: "Cancel job", pause: "Pause", resume: "Resume", undo: "Undo", "retry-failures": "Retry failures",
  approve: "Approve", reject: "Reject",
};

/** The job page shows exactly the buttons of the job's `allowedActions` (read from the API
 * in the same moment, so a running job that moves on is compared again). */
async function buttonsFollowTheApi(page, token, jobId, expected) {
  let last = "";
  try {
    await until(`the buttons of job ${jobId} to be its allowedActions`, async () => {
      const allowed = (await call(token, "GET", `/jobs/${jobId}`)).allowedActions;
      const shown = [];
      for (const [verb, name] of Object.entries(ACTION_BUTTONS)) {
        if (await page.getByRole("button", { name, exact: true }).isVisible()) shown.push(verb);
      }
      last = `shown ${JSON.stringify(shown)}, allowedActions ${JSON.stringify(allowed)}`;
      return JSON.stringify(shown) === JSON.stringify(allowed)
        && (expected === undefined || JSON.stringify(allowed) === JSON.stringify(expected));
    }, 10_000);
  } catch (e) {
    throw new Error(`${e.message}: ${last}${expected ? `, expected ${JSON.stringify(expected)}` : ""}`);
  }
}

/** The first cells (external ids) of the table's rows are exactly `expected`, in any order
 * (the page polls: this waits for it, and says what it last read when it times out). */
async function rowsRead(page, expected, timeout = 10_000) {
  const want = [...expected].sort();
  try {
    await page.waitForFunction((wanted) => {
      const got = [...document.querySelectorAll("#view tbody tr")].map((tr) => tr.cells[0].textContent).sort();
      return JSON.stringify(got) === JSON.stringify(wanted);
    }, want, { timeout });
  } catch (e) {
    const got = await page.locator("#view tbody tr td:first-child").allTextContents();
    throw new Error(`the table's rows read ${JSON.stringify(got.sort())}, expected ${JSON.stringify(want)} (${e.message.split("\n")[0]})`);
  }
}

/** Submits the locations filter form with these values (absent fields emptied, status "any"). */
async function filterLocations(page, values) {
  await page.getByLabel("Status").selectOption(values.status || "");
  for (const [label, name] of [["Country", "country"], ["City", "city"], ["Tag", "tag"], ["External id", "externalId"]]) {
    await page.getByLabel(label, { exact: true }).fill(values[name] || "");
  }
  await page.getByRole("button", { name: "Filter", exact: true }).click();
}

/** The counters the page shows (`dl.counters`), label to figure. */
async function countersRead(page) {
  const pairs = await page.locator("dl.counters div").evaluateAll((divs) => divs.map((div) => [
    div.querySelector("dt").textContent.trim(), div.querySelector("dd").textContent.trim()]));
  return Object.fromEntries(pairs);
}

/** The import form as it is: choose this file (a name and its text), submit; answers the
 * upload request the page made (the PUT to the import's upload URL). */
async function importFile(page, name, text) {
  await page.getByLabel("File", { exact: true }).setInputFiles({
    name, mimeType: name.endsWith(".csv") ? "text/csv" : "application/x-ndjson", buffer: Buffer.from(text),
  });
  const put = page.waitForRequest((r) => r.method() === "PUT" && /\/imports\/[0-9a-f-]+\/file\?token=/.test(r.url()));
  await page.getByRole("button", { name: "Import", exact: true }).click();
  return put;
}

/** Waits to land on an import's page other than `before`'s; answers the import's id. */
async function importPage(page, before) {
  await page.waitForURL((url) => /^#\/imports\/[0-9a-f-]{36}$/.test(url.hash) && !url.hash.endsWith(`/${before}`),
    { timeout: WAIT });
  const id = new URL(page.url()).hash.split("/").pop();
  await page.getByRole("heading", { name: `Import ${id}`, level: 1 }).waitFor();
  return id;
}

/** axe-core's WCAG 2.1 A/AA rules on the page as it is now: no violation. */
async function accessible(page, what) {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] });
    return result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
  });
  assert.deepEqual(violations, [], `accessibility violations on ${what}`);
}

const failures = [];
let exitCode = 0;
try {
  if (MODE === "smoke") await smoke();
  else await full();
} catch (error) {
  exitCode = 1;
  console.error(`FAILED at step "${stepName}": ${error.stack || error}`);
} finally {
  await browser.close();
}
if (failures.length) {
  exitCode = 1;
  console.error(failures.join("\n"));
}
if (exitCode === 0) console.log(`console tests (${MODE}) passed; screenshots in ${SHOTS}`);
process.exit(exitCode);

// --- the whole console, on the embedded backend ------------------------------------------------

async function full() {
  const TOKEN_B = env("TOKEN_B");
  const TOKEN_ADMIN = env("TOKEN_ADMIN");
  const FAIL_ID = env("FAIL_ID");

  step("seed brand A (4 offers, 1,000 locations) and subscribe a loopback receiver");
  const offers = await seedBrand(TOKEN_A, 4, 1000);
  const hooks = await receiver();
  await call(TOKEN_A, "POST", "/webhooks", {
    url: hooks.url, description: "console test receiver",
    filter: { eventTypes: ["job.succeeded", "job.completed_with_errors", "job.failed", "job.cancelled"] },
  });

  const a = await open("brand A");
  clean.push(a);
  const { page } = a;

  step("the page before sign-in: a labelled token field, nothing else");
  await page.goto(CONSOLE);
  assert.equal(await page.getByLabel("Bearer token").isVisible(), true);
  assert.equal(await page.locator("#nav").isVisible(), false);
  await accessible(page, "the sign-in page");

  step("paste brand A's token: an empty jobs list");
  await signIn(page, TOKEN_A);
  await page.getByText("No jobs yet.").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("bulklink.token")), TOKEN_A);
  assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing in localStorage");

  step("a job started through the API appears, runs and reaches 100% / SUCCEEDED without a reload");
  const navigations = [];
  page.on("framenavigated", (frame) => { if (frame === page.mainFrame()) navigations.push(frame.url()); });
  const job1 = await startJob(TOKEN_A, offers[0]);
  await jobRowReads(page, job1, "RUNNING");
  const midway = Number(await row(page, job1).locator("progress").getAttribute("value"));
  await jobRowReads(page, job1, "SUCCEEDED");
  assert.equal(await row(page, job1).locator("progress").getAttribute("value"), "100.0");
  assert.equal((await row(page, job1).locator(".pct").textContent()).trim(), "100%");
  assert.ok(midway < 100, `the bar moved while the job ran (it read ${midway} while RUNNING)`);
  assert.deepEqual(navigations, [], "the list updated in place, without a navigation");

  step("open the job: counters, a chart, the webhook delivery; redeliver it");
  await row(page, job1).getByRole("link").click();
  await page.getByRole("heading", { name: `Job ${job1}` }).waitFor();
  await jobPageReads(page, "SUCCEEDED");
  const linked = page.locator("dl.counters div", { hasText: /^Linked/ }).locator("dd");
  assert.equal((await linked.textContent()).replace(/[^0-9]/g, ""), "1000");
  await page.locator("figure.chart svg polyline").waitFor();
  assert.match(await page.locator("figure.chart svg").getAttribute("aria-label"), /100% after/);
  // An ended linking job without failures: undo only.
  await buttonsFollowTheApi(page, TOKEN_A, job1, ["undo"]);
  const delivery = page.locator("section", { hasText: "Webhook deliveries" }).locator("tbody tr").first();
  await delivery.locator(".status", { hasText: /^succeeded$/ }).waitFor({ timeout: WAIT });
  assert.match(await delivery.textContent(), /job\.succeeded/);
  await until("the receiver to get the delivery", () => hooks.requests.length >= 1);
  const webhookId = hooks.requests[0].id;
  assert.ok(webhookId, "a webhook-id header");
  await delivery.getByRole("button", { name: /^Redeliver job\.succeeded delivery/ }).click();
  await until("the redelivery to arrive", () => hooks.requests.length >= 2);
  assert.equal(hooks.requests[1].id, webhookId, "a redelivery carries the same webhook-id");
  await delivery.locator("td.num", { hasText: /^2$/ }).waitFor({ timeout: WAIT });
  await page.screenshot({ path: `${SHOTS}/job.png`, fullPage: true });
  await accessible(page, "a job page");

  step("a job with injected failures: the failure list, with reasons, paginated");
  await call(TOKEN_A, "POST", "/locations", { id: FAIL_ID, address: "13 Failing Street" });
  const job2 = await startJob(TOKEN_A, offers[1]);
  await page.goto(`${CONSOLE}#/jobs/${job2}`);
  await jobPageReads(page, "COMPLETED_WITH_ERRORS");
  const failureRows = page.locator("section", { hasText: "Failures" }).locator("tbody tr");
  await failureRows.first().waitFor();
  const job2View = await call(TOKEN_A, "GET", `/jobs/${job2}`);
  assert.ok(job2View.counters.failed >= 1, "the job has failures");
  const firstPage = await failureRows.allTextContents();
  assert.equal(firstPage.length, Math.min(20, job2View.counters.failed), "a page of 20 failures");
  assert.ok(firstPage.every((text) => text.length > 36), "each failure names its location and a reason");
  const allFailures = (await call(TOKEN_A, "GET", `/jobs/${job2}/failures?limit=1000`)).items;
  assert.ok(allFailures.some((f) => f.locationId === FAIL_ID), "the failing location is among the failures");
  const next = page.getByRole("button", { name: "Next page" });
  if (job2View.counters.failed > 20) {
    await next.click();
    await page.getByText("Page 2").waitFor();
    const secondPage = await failureRows.allTextContents();
    assert.notDeepEqual(secondPage, firstPage, "page 2 shows other failures");
    await page.getByRole("button", { name: "Previous page" }).click();
    await page.getByText("Page 1").waitFor();
  } else {
    assert.equal(await next.isDisabled(), true);
  }
  await buttonsFollowTheApi(page, TOKEN_A, job2, ["undo", "retry-failures"]);

  step("download the job's report: a row per location, its failed rows with their errors");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download report (CSV)" }).click(),
  ]);
  assert.equal(download.suggestedFilename(), `job-${job2}-report.csv`);
  const report = (await readFile(await download.path(), "utf8")).trimEnd().split("\n");
  assert.equal(report[0], "locationId,externalId,outcome,error,at");
  assert.equal(report.length - 1, job2View.counters.total, "a row per location");
  const failedRows = report.filter((line) => line.split(",")[2] === "failed");
  assert.equal(failedRows.length, job2View.counters.failed);
  assert.ok(failedRows.some((line) => line.startsWith(`${FAIL_ID},`) && line.split(",")[3].length > 0),
    "the failing location's row carries its error");

  step("a job scheduled an hour ahead: SCHEDULED, its start time, cancel only");
  const laterOffer = (await call(TOKEN_A, "POST", "/offers", { name: "Later" })).id;
  const notBefore = new Date(Date.now() + 3_600_000).toISOString();
  const scheduled = (await call(TOKEN_A, "POST", `/offers/${laterOffer}/link-all-locations`, { notBefore })).id;
  await page.goto(`${CONSOLE}#/jobs/${scheduled}`);
  await jobPageReads(page, "SCHEDULED");
  await page.locator("main p", { hasText: "starts at" }).waitFor();
  await buttonsFollowTheApi(page, TOKEN_A, scheduled, ["cancel"]);
  await page.getByRole("button", { name: "Cancel job" }).click();
  await jobPageReads(page, "CANCELLED");

  step("a job awaiting approval: its creator's approval is refused with the reason; reject ends it");
  const heldOffer = (await call(TOKEN_A, "POST", "/offers", { name: "Held" })).id;
  const awaiting = (await call(TOKEN_A, "POST", `/offers/${heldOffer}/link-all-locations`, { requireApproval: true })).id;
  await page.goto(`${CONSOLE}#/jobs/${awaiting}`);
  await jobPageReads(page, "AWAITING_APPROVAL");
  await buttonsFollowTheApi(page, TOKEN_A, awaiting, ["cancel", "approve", "reject"]);
  // The browser logs the refused request: the one error this page expects.
  a.expected = (e) => /status of 403/.test(e) && /\/jobs\/[0-9a-f-]+\/approve\)$/.test(e);
  await page.getByRole("button", { name: "Approve", exact: true }).click();
  await page.getByText(/approve refused: .*a second caller of its brand/).waitFor();
  await page.getByRole("button", { name: "Reject", exact: true }).click();
  await jobPageReads(page, "CANCELLED");
  assert.equal((await call(TOKEN_A, "GET", `/jobs/${awaiting}`)).counters.total, 0);
  await buttonsFollowTheApi(page, TOKEN_A, awaiting);

  step("press cancel on a running job: CANCELLED");
  const job3 = await startJob(TOKEN_A, offers[2]);
  await page.goto(`${CONSOLE}#/jobs/${job3}`);
  await jobPageReads(page, "RUNNING");
  await buttonsFollowTheApi(page, TOKEN_A, job3);
  assert.equal(await page.getByRole("button", { name: "Download report (CSV)" }).isHidden(), true,
    "a running job has no report yet");
  await page.getByRole("button", { name: "Cancel job" }).click();
  await jobPageReads(page, "CANCELLED");
  assert.equal((await call(TOKEN_A, "GET", `/jobs/${job3}`)).status, "CANCELLED");
  await buttonsFollowTheApi(page, TOKEN_A, job3);
  // Undo, and a retry if the cancel came after the failing location's chunk; nothing else.
  const cancelled = (await call(TOKEN_A, "GET", `/jobs/${job3}`)).allowedActions;
  assert.ok(cancelled.includes("undo") && cancelled.every((a) => a === "undo" || a === "retry-failures"),
    `a cancelled job allows ${cancelled}`);

  step("pause (from the keyboard) and resume a running job");
  const job4 = await startJob(TOKEN_A, offers[3]);
  await page.goto(`${CONSOLE}#/jobs/${job4}`);
  await jobPageReads(page, "RUNNING");
  await page.getByRole("button", { name: "Pause" }).focus();
  await page.keyboard.press("Enter");
  await jobPageReads(page, "PAUSED");
  assert.equal((await call(TOKEN_A, "GET", `/jobs/${job4}`)).status, "PAUSED");
  await buttonsFollowTheApi(page, TOKEN_A, job4, ["cancel", "resume"]);
  await page.getByRole("button", { name: "Resume" }).click();
  await jobPageReads(page, "RUNNING");
  assert.notEqual((await call(TOKEN_A, "GET", `/jobs/${job4}`)).status, "PAUSED");
  await buttonsFollowTheApi(page, TOKEN_A, job4);

  step("undo of the first job: an unlinking job shows its Unlinked counter and offers no undo");
  await page.goto(`${CONSOLE}#/jobs/${job1}`);
  await jobPageReads(page, "SUCCEEDED");
  await page.getByRole("button", { name: "Undo", exact: true }).click();
  await page.waitForURL((url) => url.hash.startsWith("#/jobs/") && !url.hash.endsWith(job1));
  const undoId = new URL(page.url()).hash.split("/").pop();
  await jobPageReads(page, "SUCCEEDED");
  const unlinked = page.locator("dl.counters div", { hasText: /^Unlinked/ }).locator("dd");
  assert.equal((await unlinked.textContent()).replace(/[^0-9]/g, ""), "1000");
  await buttonsFollowTheApi(page, TOKEN_A, undoId, []);

  step("the jobs list with every job, its screenshot; the webhooks page");
  await page.getByRole("link", { name: "Jobs" }).click();
  for (const id of [job1, job2, job3, job4]) await row(page, id).waitFor();
  await page.screenshot({ path: `${SHOTS}/jobs.png`, fullPage: true });
  await accessible(page, "the jobs list");
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByRole("link", { name: hooks.url }).waitFor();
  assert.equal(await page.locator("#nav-admin").isVisible(), false, "a brand sees no admin section");

  step("a webhook's page: a test send, a replay counted then sent, in the delivery log");
  await page.getByRole("link", { name: hooks.url }).click();
  await page.getByRole("heading", { name: /^Webhook / }).waitFor();
  const before = hooks.requests.length;
  await page.getByRole("button", { name: "Send a test event" }).click();
  await until("the test event to arrive", () => hooks.requests.length > before);
  const test = JSON.parse(hooks.requests[before].body);
  assert.equal(test.type, "webhook.test");
  await page.locator("tbody tr", { hasText: "webhook.test" }).first().waitFor({ timeout: WAIT });
  // From an hour ago: the local time the input takes (the console sends it as UTC).
  const local = new Date(Date.now() - 3600_000 - new Date().getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
  await page.getByLabel("Replay from").fill(local);
  await page.getByRole("button", { name: "Count events" }).click();
  const counted = await call(TOKEN_A, "POST", `/webhooks/${test.data.webhookId}/replay?dryRun=true`,
    { since: new Date(Date.now() - 3600_000).toISOString() });
  assert.ok(counted.events >= 1, `events to replay: ${JSON.stringify(counted)}`);
  await page.locator("#replay-outcome", { hasText: /would be sent again/ }).waitFor();
  const shownCount = Number((await page.locator("#replay-outcome").textContent()).replace(/[^0-9]/g, ""));
  assert.equal(shownCount, counted.events, "the console's count is the API's");
  const logged = async () =>
    (await call(TOKEN_A, "GET", `/webhooks/${test.data.webhookId}/deliveries?limit=100`)).items.map((d) => d.id);
  const loggedBefore = await logged();
  const beforeReplay = hooks.requests.length;
  await page.getByRole("button", { name: "Replay", exact: true }).click();
  await page.locator("#replay-outcome", { hasText: /^Replaying/ }).waitFor();
  await until("the replayed events to arrive", () => hooks.requests.length >= beforeReplay + shownCount);
  for (const r of hooks.requests.slice(beforeReplay)) {
    assert.ok(loggedBefore.includes(r.id), `a replay keeps the original webhook-id (${r.id})`);
  }
  assert.deepEqual(await logged(), loggedBefore, "a replay of what it had makes no new delivery");
  await accessible(page, "a webhook's page");

  step("a throttled subscription disabled by its receiver's 410, shown with its reason, enabled again");
  const goneHooks = await receiver(410);
  const throttled = await call(TOKEN_A, "POST", "/webhooks", { url: goneHooks.url, rateLimitPerSec: 3, description: "throttled" });
  await page.goto(`${CONSOLE}#/webhooks/${throttled.id}`);
  await page.getByText("at most 3 a second").waitFor();
  await page.getByRole("button", { name: "Send a test event" }).click();
  await until("the 410 to arrive", () => goneHooks.requests.length >= 1);
  await until("the subscription to be disabled",
    async () => (await call(TOKEN_A, "GET", `/webhooks/${throttled.id}`)).status === "disabled");
  await page.reload();
  await page.locator("#disabled-reason", { hasText: "410 Gone" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Send a test event" }).isDisabled(), true);
  await page.getByRole("button", { name: "Enable" }).click();
  await until("the subscription to be active again",
    async () => (await call(TOKEN_A, "GET", `/webhooks/${throttled.id}`)).status === "active");
  await page.locator("#disabled-reason").waitFor({ state: "detached" });
  await page.screenshot({ path: `${SHOTS}/webhook.png`, fullPage: true });
  await accessible(page, "an enabled webhook's page");

  step("brand A's locations, page by page: 100 a page, Next and Previous");
  await page.getByRole("link", { name: "Locations", exact: true }).click();
  await page.getByRole("heading", { name: "Locations", level: 1 }).waitFor();
  const locationRows = page.locator("#view tbody tr");
  await until("a full first page of locations", async () => (await locationRows.count()) === 100);
  const firstKeys = await locationRows.evaluateAll((trs) => trs.map((tr) => tr.dataset.key));
  await page.getByRole("button", { name: "Next page" }).click();
  await page.getByText("Page 2").waitFor();
  await until("a full second page of locations", async () => {
    const keys = await locationRows.evaluateAll((trs) => trs.map((tr) => tr.dataset.key));
    return keys.length === 100 && keys.every((k) => !firstKeys.includes(k));
  });
  await page.getByRole("button", { name: "Previous page" }).click();
  await page.getByText("Page 1").waitFor();
  assert.deepEqual(await locationRows.evaluateAll((trs) => trs.map((tr) => tr.dataset.key)), firstKeys,
    "Previous page shows the first page again");
  assert.equal(await page.getByRole("button", { name: "Previous page" }).isDisabled(), true);

  step("brand C's estate through the API: five named stores, one of them closed");
  const TOKEN_C = env("TOKEN_C");
  const stores = [
    { externalId: "gb-lon-1", name: "Soho", address: "1 Dean Street", city: "London", country: "GB", tags: ["drive-thru"] },
    { externalId: "gb-man-1", name: "Northern Quarter", address: "2 Oldham Street", city: "Manchester", country: "GB", tags: ["late"] },
    { externalId: "gb-lon-2", name: "Strand", address: "3 Strand", city: "London", country: "GB", tags: ["drive-thru", "late"] },
    { externalId: "fr-par-1", name: "Marais", address: "4 rue des Rosiers", city: "Paris", country: "FR", tags: ["drive-thru"] },
    { externalId: "de-ber-1", name: "Mitte", address: "5 Torstraße", city: "Berlin", country: "DE" },
  ];
  const created = await call(TOKEN_C, "POST", "/locations", stores);
  const storeId = Object.fromEntries(created.map((l) => [l.externalId, l.id]));
  const brandC = created[0].brandId;
  const closed = await call(TOKEN_C, "PATCH", `/locations/${storeId["gb-lon-2"]}`, { status: "closed" });
  assert.equal(closed.status, "closed");

  const c = await open("brand C");
  // The offer page asks for the rule (and, with one, its drift) on every refresh: a 404 there
  // says "no rule". That, and the 400 of the country ZZ below, are the errors the browser may
  // log for this page.
  c.expected = (e) => (/status of 404/.test(e) && /\/offers\/[0-9a-f-]+\/(rule|drift)\)$/.test(e))
    || (/status of 400/.test(e) && /\/locations\?[^)]*country=ZZ/.test(e));
  clean.push(c);
  const cp = c.page;

  step("brand C: the locations page lists every store, the closed one last");
  await signIn(cp, TOKEN_C);
  await cp.getByRole("link", { name: "Locations", exact: true }).click();
  await cp.getByRole("heading", { name: "Locations", level: 1 }).waitFor();
  await rowsRead(cp, stores.map((s) => s.externalId));
  assert.equal(await cp.locator("#view tbody tr").last().getAttribute("data-key"), storeId["gb-lon-2"],
    "without a status filter the closed store comes after the active ones");
  const cells = async (externalId) => (await row(cp, storeId[externalId]).locator("td").allTextContents()).map((t) => t.trim());
  assert.deepEqual(await cells("gb-lon-1"), ["gb-lon-1", "Soho", "1 Dean Street", "London", "GB", "drive-thru", "active", "no"]);
  assert.deepEqual(await cells("gb-lon-2"), ["gb-lon-2", "Strand", "3 Strand", "London", "GB", "drive-thru, late", "closed", "no"]);
  assert.deepEqual(await cells("de-ber-1"), ["de-ber-1", "Mitte", "5 Torstraße", "Berlin", "DE", "—", "active", "no"]);
  await cp.screenshot({ path: `${SHOTS}/locations.png`, fullPage: true });
  await accessible(cp, "the locations page");

  step("filter by country (typed in lower case): only the GB stores; the filter is in the address and survives a reload");
  await filterLocations(cp, { country: "gb" });
  await cp.waitForURL((url) => url.hash === "#/locations?country=GB");
  await rowsRead(cp, ["gb-lon-1", "gb-man-1", "gb-lon-2"]);
  await cp.reload();
  await cp.getByRole("heading", { name: "Locations", level: 1 }).waitFor();
  assert.equal(await cp.getByLabel("Country", { exact: true }).inputValue(), "GB");
  await rowsRead(cp, ["gb-lon-1", "gb-man-1", "gb-lon-2"]);
  await accessible(cp, "the filtered locations page");

  step("filters together: active GB stores; one tag; one external id");
  await filterLocations(cp, { status: "active", country: "GB" });
  await cp.waitForURL((url) => url.hash === "#/locations?status=active&country=GB");
  await rowsRead(cp, ["gb-lon-1", "gb-man-1"]);
  await filterLocations(cp, { tag: "drive-thru", city: "London" });
  await rowsRead(cp, ["gb-lon-1", "gb-lon-2"]);
  await filterLocations(cp, { externalId: "fr-par-1" });
  await rowsRead(cp, ["fr-par-1"]);

  step("a country the API refuses: the page says why");
  await filterLocations(cp, { country: "zz" });
  await cp.getByText(/^The filter was refused: .*ZZ/).waitFor();
  assert.equal(await cp.locator("#view tbody tr").count(), 0);

  step("status closed: the closed store alone");
  await filterLocations(cp, { status: "closed" });
  await cp.waitForURL((url) => url.hash === "#/locations?status=closed");
  await rowsRead(cp, ["gb-lon-2"]);
  assert.equal(await cp.getByLabel("Status").inputValue(), "closed");
  await cp.getByRole("link", { name: "Clear filters" }).click();
  await rowsRead(cp, stores.map((s) => s.externalId));

  step("an offer made through the API: listed on the offers page; its page says it has no rule");
  const estateOffer = (await call(TOKEN_C, "POST", "/offers", { name: "Estate offer" })).id;
  await cp.getByRole("link", { name: "Offers", exact: true }).click();
  await cp.getByRole("heading", { name: "Offers", level: 1 }).waitFor();
  await row(cp, estateOffer).waitFor();
  assert.deepEqual((await row(cp, estateOffer).locator("td").allTextContents()).map((t) => t.trim()),
    ["Estate offer", estateOffer, "0"]);
  assert.equal(await cp.locator("#view tbody tr").count(), 1, "brand C has one offer");
  await accessible(cp, "the offers page");
  await row(cp, estateOffer).getByRole("link", { name: "Estate offer" }).click();
  await cp.getByRole("heading", { name: `Offer ${estateOffer}`, level: 1 }).waitFor();
  await cp.getByText("No rule:").waitFor();
  assert.equal(await cp.getByRole("button", { name: "Remove rule" }).isVisible(), false);
  assert.equal(await cp.getByRole("heading", { name: "Drift" }).isVisible(), false);
  await accessible(cp, "an offer page without a rule");

  step("set a rule from the form (country GB); follow the link to its reconcile job");
  await cp.getByLabel("Countries").fill("GB");
  await cp.getByRole("button", { name: "Set rule" }).click();
  const jobLink = cp.getByRole("link", { name: /^reconcile job / });
  await jobLink.waitFor();
  await cp.locator("#view code", { hasText: /^\{ country: \[GB\] \}$/ }).waitFor();
  const rule = await call(TOKEN_C, "GET", `/offers/${estateOffer}/rule`);
  assert.deepEqual(rule.where, { country: ["GB"] });
  const reconcileId = (await jobLink.getAttribute("href")).split("/").pop();
  await jobLink.click();
  await cp.getByRole("heading", { name: `Job ${reconcileId}` }).waitFor();
  await jobPageReads(cp, "SUCCEEDED");
  const reconcile = await call(TOKEN_C, "GET", `/jobs/${reconcileId}`);
  assert.equal(reconcile.type, "reconcile");
  assert.equal(reconcile.offerId, estateOffer);
  const reconciled = cp.locator("dl.counters div", { hasText: /^Linked/ }).locator("dd");
  assert.equal((await reconciled.textContent()).trim(), "2", "the two active GB stores were linked");

  step("back to the offer from the job page: drift 0/0, two locations carry it");
  await cp.getByRole("link", { name: estateOffer, exact: true }).click();
  await cp.getByRole("heading", { name: `Offer ${estateOffer}`, level: 1 }).waitFor();
  const driftReads = (name) => cp.locator("dl.counters div").filter({ hasText: new RegExp(`^${name}\\s*0$`) });
  await driftReads("Missing").waitFor({ timeout: WAIT });
  await driftReads("Extra").waitFor({ timeout: WAIT });
  assert.deepEqual(await call(TOKEN_C, "GET", `/offers/${estateOffer}/drift`), { missing: 0, extra: 0 });
  await cp.locator("dd", { hasText: /^2$/ }).waitFor();
  assert.equal(await cp.getByLabel("Countries").inputValue(), "GB", "the form shows the rule in force");
  await cp.screenshot({ path: `${SHOTS}/offer.png`, fullPage: true });
  await accessible(cp, "an offer page with a rule and its drift");

  step("the locations and offers pages show the links the rule made");
  await cp.goto(`${CONSOLE}#/locations?country=GB`);
  await rowsRead(cp, ["gb-lon-1", "gb-man-1", "gb-lon-2"]);
  await row(cp, storeId["gb-lon-1"]).locator("td", { hasText: /^yes$/ }).waitFor();
  assert.equal((await cells("gb-man-1")).at(-1), "yes");
  assert.equal((await cells("gb-lon-2")).at(-1), "no", "the closed store carries no offer");
  await cp.getByRole("link", { name: "Offers", exact: true }).click();
  await row(cp, estateOffer).locator("td.num", { hasText: /^2$/ }).waitFor();

  step("remove the rule: the page says there is none, and the links stay");
  await row(cp, estateOffer).getByRole("link", { name: "Estate offer" }).click();
  await cp.getByRole("button", { name: "Remove rule" }).click();
  await cp.getByText("No rule:").waitFor();
  await cp.getByRole("heading", { name: "Drift" }).waitFor({ state: "hidden" });
  const gone = await fetch(`${API}/offers/${estateOffer}/rule`, { headers: { Authorization: `Bearer ${TOKEN_C}` } });
  assert.equal(gone.status, 404, "the rule is gone");
  assert.equal((await call(TOKEN_C, "GET", `/offers/${estateOffer}`)).locationsTotal, 2, "its links stay");
  failures.push(...c.foreign.map((url) => `brand C's page requested ${url}`));

  step("brand D: the locations page links to the import form");
  const TOKEN_D = env("TOKEN_D");
  const d = await open("brand D");
  // The file the server refuses (422 at the upload URL) is the error the browser may log.
  d.expected = (e) => /status of 422/.test(e) && /\/imports\/[0-9a-f-]+\/file\?token=[^)]*\)$/.test(e);
  clean.push(d);
  const dp = d.page;
  await signIn(dp, TOKEN_D);
  await dp.getByRole("link", { name: "Locations", exact: true }).click();
  await dp.getByText("No locations.").waitFor();
  await dp.getByRole("link", { name: "Import stores" }).click();
  await dp.getByRole("heading", { name: "Import stores", level: 1 }).waitFor();
  assert.equal(new URL(dp.url()).hash, "#/imports/new");
  assert.equal(await dp.getByLabel("Format").inputValue(), "csv");
  assert.equal(await dp.getByLabel("Close stores the file does not name").isChecked(), false);
  await accessible(dp, "the import form");

  step("a file that is not an import's: the form shows the server's 422 detail and stays");
  const hello = "hello,world\n1,2\n";
  const refusedPut = await importFile(dp, "hello.csv", hello);
  const alert = dp.locator("#alert");
  await alert.waitFor();
  // The same file through the API: the server's own words.
  const probe = await call(TOKEN_D, "POST", "/imports", { format: "csv" });
  const refused = await fetch(probe.uploadUrl, { method: "PUT", body: hello });
  assert.equal(refused.status, 422);
  const { detail } = await refused.json();
  assert.equal(await alert.textContent(), `The file was refused: ${detail}`);
  assert.match(detail, /header/, "the detail says what is wrong");
  assert.equal(refusedPut.headers().authorization, undefined, "no bearer token goes to the upload URL");
  assert.equal(new URL(dp.url()).hash, "#/imports/new", "the form stays");
  assert.equal(await dp.getByRole("button", { name: "Import", exact: true }).isDisabled(), false);
  await dp.screenshot({ path: `${SHOTS}/import-form.png`, fullPage: true });

  step("import a CSV of three stores and one with country XX: the import's page follows its job to the end");
  const storesCsv = [
    "externalId,name,address,city,country,tags",
    "d-1,Alpha,1 First Street,Leeds,GB,drive-thru",
    "d-2,Beta,2 Second Street,York,GB,",
    "d-3,Gamma,3 Third Street,Paris,FR,late;drive-thru",
    "d-4,Delta,4 Fourth Street,Nowhere,XX,",
    "",
  ].join("\n");
  await dp.getByLabel("Format").selectOption("ndjson");
  const put = await importFile(dp, "stores.csv", storesCsv);
  assert.equal(await dp.getByLabel("Format").inputValue(), "csv", "the file's extension chose the format");
  const allHeaders = await put.allHeaders();
  assert.equal(allHeaders.authorization, undefined, `no bearer token goes to the upload URL: ${JSON.stringify(allHeaders)}`);
  const importId = await importPage(dp, null);
  assert.equal(await alert.isVisible(), false, "the refusal's alert is gone");
  await jobPageReads(dp, "COMPLETED_WITH_ERRORS");
  assert.deepEqual(await countersRead(dp),
    { Created: "3", Updated: "0", Unchanged: "0", Closed: "0", Invalid: "1", Failed: "0", Total: "4" });
  await rowsRead(dp, ["5"]);
  const invalidRow = dp.locator("#view tbody tr");
  assert.equal(await invalidRow.count(), 1);
  assert.match(await invalidRow.locator("td").nth(1).textContent(), /country/);
  const imported = await call(TOKEN_D, "GET", `/imports/${importId}`);
  assert.equal(imported.state, "started");
  const kv = dp.locator("dl.kv");
  await kv.getByText("started", { exact: true }).waitFor();
  assert.equal(await kv.locator("dt", { hasText: /^Format$/ }).locator("xpath=following-sibling::dd[1]").textContent(), "CSV");
  assert.equal(await kv.locator("dt", { hasText: /^Closes stores/ }).locator("xpath=following-sibling::dd[1]").textContent(), "no");
  await dp.screenshot({ path: `${SHOTS}/import.png`, fullPage: true });
  await accessible(dp, "an import's page");

  step("the import's job page: the import counters, the invalid row by its line, a link back to the import");
  await dp.getByRole("link", { name: imported.jobId, exact: true }).click();
  await dp.getByRole("heading", { name: `Job ${imported.jobId}`, level: 1 }).waitFor();
  await jobPageReads(dp, "COMPLETED_WITH_ERRORS");
  assert.deepEqual(await countersRead(dp), {
    Total: "4", Processed: "4", Created: "3", Updated: "0", Unchanged: "0", Closed: "0", Invalid: "1",
    Failed: "0", Cancelled: "0",
  });
  const failureTable = dp.locator("section", { has: dp.getByRole("heading", { name: "Failures" }) });
  assert.deepEqual(await failureTable.locator("thead th").allTextContents(), ["Line", "Reason", "Attempts"]);
  await failureTable.locator("tbody tr").first().waitFor();
  const failureCells = await failureTable.locator("tbody tr").evaluateAll((trs) => trs.map((tr) => tr.cells[0].textContent));
  assert.deepEqual(failureCells, ["5"]);
  await accessible(dp, "an import's job page");
  await dp.getByRole("link", { name: importId, exact: true }).click();
  await dp.getByRole("heading", { name: `Import ${importId}`, level: 1 }).waitFor();

  step("the same file again: every store unchanged, the invalid row still invalid");
  await dp.getByRole("link", { name: "Import another file" }).click();
  await dp.getByRole("heading", { name: "Import stores", level: 1 }).waitFor();
  await importFile(dp, "stores.csv", storesCsv);
  const againId = await importPage(dp, importId);
  await jobPageReads(dp, "COMPLETED_WITH_ERRORS");
  assert.deepEqual(await countersRead(dp),
    { Created: "0", Updated: "0", Unchanged: "3", Closed: "0", Invalid: "1", Failed: "0", Total: "4" });
  await rowsRead(dp, ["5"]);
  assert.equal((await call(TOKEN_D, "GET", `/imports/${againId}`)).state, "started");

  step("brand D's locations: the three stores the file made");
  await dp.getByRole("link", { name: "Locations", exact: true }).click();
  await rowsRead(dp, ["d-1", "d-2", "d-3"]);
  const brandD = imported.brandId;
  failures.push(...d.foreign.map((url) => `brand D's page requested ${url}`));

  step("a phone-width screen: readable, no sideways scrolling");
  const phone = await open("brand A, phone", { width: 390, height: 844 });
  clean.push(phone);
  await signIn(phone.page, TOKEN_A);
  await row(phone.page, job1).waitFor();
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  const bar = await row(phone.page, job1).locator("progress").boundingBox();
  assert.ok(bar && bar.x + bar.width <= 390, `the progress bar is on the screen (${JSON.stringify(bar)})`);
  assert.equal(await row(phone.page, job1).locator(".status").isVisible(), true);
  await phone.page.screenshot({ path: `${SHOTS}/jobs-phone.png`, fullPage: true });
  await phone.context.close();

  step("brand B (token in the URL's fragment) sees none of it");
  const b = await open("brand B");
  const seenByB = [];
  b.page.on("response", async (response) => {
    if (response.url().startsWith(`${API}/`) && !response.url().includes("/console/")) {
      seenByB.push({ url: response.url(), status: response.status(), body: await response.text().catch(() => "") });
    }
  });
  await b.page.goto(`${CONSOLE}#token=${TOKEN_B}`);
  await b.page.getByText("No jobs yet.").waitFor();
  assert.ok(!b.page.url().includes("token="), `the token left the address bar: ${b.page.url()}`);
  await b.page.goto(`${CONSOLE}#/jobs/${job1}`);
  await b.page.getByText("No such job").waitFor();
  assert.ok(seenByB.some((r) => r.status === 404 && r.url.endsWith(`/jobs/${job1}`)), "A's job is a 404 to B");
  await b.page.goto(`${CONSOLE}#/webhooks`);
  await b.page.getByText("No subscriptions.").waitFor();
  for (const id of [job1, job2, job3, job4]) {
    // Only the 404 of the job B asked for by its id may name it.
    const shown = seenByB.filter((r) => r.body.includes(id) && !(r.status === 404 && r.url.includes(id)));
    assert.deepEqual(shown.map((r) => `${r.status} ${r.url}`), [], `brand B was shown job ${id}`);
  }
  // The 404 of A's job is the one error B's page may log (the browser reports a 4xx fetch).
  const expected = b.errors.filter((e) => /status of 404/.test(e));
  assert.equal(expected.length, b.errors.length, `brand B's page logged: ${b.errors.join("; ")}`);
  failures.push(...b.foreign.map((url) => `brand B's page requested ${url}`));
  await b.context.close();

  step("an administrator: the write budget with each worker's live rate; change it");
  const admin = await open("administrator");
  clean.push(admin);
  await signIn(admin.page, TOKEN_ADMIN);
  await admin.page.getByRole("link", { name: "Write budget" }).click();
  await admin.page.getByRole("heading", { name: "Write budget" }).waitFor();
  await admin.page.locator("tbody tr", { hasText: "worker-1" }).waitFor();
  await admin.page.getByLabel("New write budget (writes per second)").fill("600");
  await admin.page.getByRole("button", { name: "Set budget" }).click();
  await admin.page.locator("dd", { hasText: /^600 writes\/s$/ }).waitFor();
  assert.equal((await call(TOKEN_ADMIN, "GET", "/admin/write-budget")).writesPerSec, 600);
  await accessible(admin.page, "the write budget page");
  step("an administrator: the locations page names no brand until one is given; then brand C's stores");
  await admin.page.getByRole("link", { name: "Locations", exact: true }).click();
  await admin.page.getByText("Name a brand to see its locations.").waitFor();
  await admin.page.getByLabel("Brand", { exact: true }).fill(brandC);
  await admin.page.getByRole("button", { name: "Show" }).click();
  await rowsRead(admin.page, stores.map((s) => s.externalId));
  await accessible(admin.page, "the locations page of an administrator");
  step("an administrator imports into brand D (NDJSON naming one store, closing the others)");
  await admin.page.getByRole("link", { name: "Import stores" }).click();
  await admin.page.getByRole("heading", { name: "Import stores", level: 1 }).waitFor();
  await admin.page.getByLabel("Brand", { exact: true }).fill(brandD);
  await admin.page.getByRole("button", { name: "Show" }).click();
  await admin.page.getByText(`The stores go to brand ${brandD}.`).waitFor();
  await admin.page.getByLabel("Close stores the file does not name").check();
  const renamed = JSON.stringify({ externalId: "d-1", name: "Alpha renamed", address: "1 First Street",
    city: "Leeds", country: "GB", tags: ["drive-thru"] });
  await importFile(admin.page, "stores.ndjson", `${renamed}\n`);
  assert.equal(await admin.page.getByLabel("Format").inputValue(), "ndjson", "the file's extension chose the format");
  const adminImport = await importPage(admin.page, null);
  await jobPageReads(admin.page, "SUCCEEDED");
  assert.deepEqual(await countersRead(admin.page),
    { Created: "0", Updated: "1", Unchanged: "0", Closed: "2", Invalid: "0", Failed: "0", Total: "3" });
  await admin.page.getByText("No invalid rows.").waitFor();
  const made = await call(TOKEN_ADMIN, "GET", `/imports/${adminImport}`);
  assert.equal(made.brandId, brandD);
  assert.equal(made.closeMissing, true);
  await admin.page.locator("dl.kv dd", { hasText: brandD }).waitFor();
  await accessible(admin.page, "an administrator's import page");
  const dStores = await call(TOKEN_D, "GET", "/locations?status=active");
  assert.deepEqual(dStores.items.map((l) => [l.externalId, l.name]), [["d-1", "Alpha renamed"]]);
  step("the administrator's page logged no error");
  failures.push(...admin.foreign.map((url) => `the admin page requested ${url}`));
  await admin.context.close();

  step("brand A's, brand C's and brand D's pages logged no error");
  await c.context.close();
  await d.context.close();
  failures.push(...a.foreign.map((url) => `brand A's page requested ${url}`));
  hooks.close();
}

// --- one pass on `serve --backend aws` (moto) ---------------------------------------------------

async function smoke() {
  step("aws: seed a brand (50 locations), sign in, start a job");
  const [offer] = await seedBrand(TOKEN_A, 1, 50);
  const a = await open("aws brand");
  clean.push(a);
  await signIn(a.page, TOKEN_A);
  const job = await startJob(TOKEN_A, offer);
  await jobRowReads(a.page, job, "SUCCEEDED");
  assert.equal(await row(a.page, job).locator("progress").getAttribute("value"), "100.0");
  step("aws: the job page");
  await row(a.page, job).getByRole("link").click();
  await jobPageReads(a.page, "SUCCEEDED");
  const linked = a.page.locator("dl.counters div", { hasText: /^Linked/ }).locator("dd");
  assert.equal((await linked.textContent()).trim(), "50");
  await a.page.screenshot({ path: `${SHOTS}/job-aws.png`, fullPage: true });
  step("the page logged no error");
  failures.push(...a.foreign.map((url) => `the page requested ${url}`));
}
