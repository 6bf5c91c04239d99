#!/usr/bin/env node
// scripts/explorer-browser.mjs — drives Debian's headless Chromium (playwright-core) through the
// explorer like a person would, asserts what it shows, and saves screenshots.
//
// Usage: node scripts/explorer-browser.mjs --url URL --job ID --out DIR [--expected FILE]
//        [--timeout-s N] [--screenshots-only]
//   --url        the explorer (a coordinator's http://HOST:PORT)
//   --job        the job to follow: opened from the network page, followed live (no reload) to
//                settled with the audit OK
//   --out        where screenshots go (created)
//   --expected   a JSON file the caller writes once the job settled, computed from chain events:
//                {"payouts": {"0xWORKER": "BASE_UNITS", ...}, "refund": "BASE_UNITS",
//                 "slashed": {"0xWORKER": "BASE_UNITS"}}; the script waits for it, then checks
//                that the payouts, refund and slashes shown equal it exactly, follows each slashed
//                worker to its evidence, and checks bad URLs give 400/404 pages
//   --screenshots-only  open the pages and save screenshots, assert nothing
// Prints "opened job ID" once the job page is open (a caller may start workers then), then one
// JSON line: {"ok": true, "screenshots": [...]}. Exits 1 on the first failed check.
//
// Chromium: /usr/bin/chromium (apt-get install -y chromium), or $GLEANER_CHROMIUM.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : "1"]);
    return acc;
  }, []),
);
const url = (args.url || "").replace(/\/$/, "");
const job = args.job;
const out = resolve(args.out || "explorer-screenshots");
const timeoutMs = Number(args["timeout-s"] || 240) * 1000;
const only = args["screenshots-only"] === "1";
if (!url || !job) {
  console.error("usage: node scripts/explorer-browser.mjs --url URL --job ID --out DIR [--expected FILE]");
  process.exit(2);
}
const exe = process.env.GLEANER_CHROMIUM || "/usr/bin/chromium";
if (!existsSync(exe)) {
  console.error(`explorer-browser: no Chromium at ${exe}; install it: sudo apt-get install -y chromium`);
  process.exit(1);
}
mkdirSync(out, { recursive: true });
const shots = [];
const fail = (msg) => {
  throw new Error(msg);
};
const check = (ok, msg) => {
  if (!ok && !only) fail(msg);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Base units as the page writes them: exact decimals, trailing zeros dropped.
const tokens = (base, decimals = 18n) => {
  const v = BigInt(base);
  const whole = v / 10n ** decimals;
  const frac = (v % 10n ** decimals).toString().padStart(Number(decimals), "0").replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
};

const browser = await chromium.launch({
  executablePath: exe,
  headless: true,
  args: [...(process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []), "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
const page = await context.newPage();
const outside = [];
page.on("request", (r) => {
  if (!r.url().startsWith(url) && !r.url().startsWith("data:")) outside.push(r.url());
});
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
async function shot(name, opts = {}) {
  const path = join(out, name);
  await page.screenshot({ path, fullPage: true, ...opts });
  shots.push(path);
  console.error(`explorer-browser: screenshot ${path}`);
}

try {
  // 1. The network page lists the job; follow its link.
  const r = await page.goto(`${url}/`);
  check(r.status() === 200, `network page answered ${r.status()}`);
  check((await page.title()).includes("Network"), "network page title");
  const link = page.locator(`#jobs a[href="/jobs/${job}"]`);
  check((await link.count()) === 1, `the network page does not list job ${job}`);
  await shot("1-network.png");
  await link.click();
  await page.waitForURL(`${url}/jobs/${job}`);
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  await shot("2-job-open.png");
  console.log(`opened job ${job}`);

  // 2. Follow it live to settled with the audit OK, without reloading the page.
  const deadline = Date.now() + timeoutMs;
  let midway = false;
  for (;;) {
    const state = await page.locator("#job-state").getAttribute("data-state").catch(() => null);
    const verdict = await page.locator("#verdict").getAttribute("data-verdict").catch(() => null);
    // REPORT_PENDING (and FAILED) are not final: the verifier publishes the report just after
    // JobSettled, and until then the audit cannot run (the page says so and retries on its next
    // update).
    if (state === "settled" && (verdict === "OK" || verdict === "DIFFERENCES")) break;
    const agreed = await page.locator(".grid .cell.s-agreed").count();
    const cells = await page.locator(".grid .cell").count();
    if (!midway && agreed > 0 && agreed < cells) {
      midway = true;
      await shot("3-job-running.png");
    }
    if (Date.now() > deadline) fail(`job ${job} not shown settled within ${timeoutMs / 1000} s (state ${state}, verdict ${verdict})`);
    await sleep(400);
  }
  check(await page.evaluate(() => window.__sameDocument === true), "the page reloaded instead of updating live");
  check((await page.locator("#verdict").getAttribute("data-verdict")) === "OK", "the audit verdict shown is not OK");
  await shot("4-job-settled.png");

  if (args.expected) {
    // 3. The payouts, refund and slashes shown equal the chain's.
    while (!existsSync(args.expected)) {
      if (Date.now() > deadline) fail(`no ${args.expected}`);
      await sleep(250);
    }
    const want = JSON.parse(readFileSync(args.expected, "utf8"));
    const rows = await page.locator("tr.payout").evaluateAll((trs) =>
      trs.map((tr) => ({ worker: tr.dataset.worker.toLowerCase(), amount: tr.dataset.amount, text: tr.innerText })),
    );
    const shown = Object.fromEntries(rows.map((r) => [r.worker, r.amount]));
    const expected = Object.fromEntries(Object.entries(want.payouts).map(([w, a]) => [w.toLowerCase(), a]));
    check(
      JSON.stringify(Object.keys(shown).sort()) === JSON.stringify(Object.keys(expected).sort()),
      `workers shown paid ${Object.keys(shown)} != chain ${Object.keys(expected)}`,
    );
    for (const [w, a] of Object.entries(expected)) {
      check(shown[w] === a, `payout of ${w}: shown ${shown[w]}, chain ${a}`);
      const row = rows.find((r) => r.worker === w);
      check(row.text.includes(tokens(a)), `payout of ${w} not written as ${tokens(a)}: ${row.text}`);
    }
    check(
      (await page.locator("#refund").getAttribute("data-amount")) === want.refund,
      `refund shown != chain ${want.refund}`,
    );
    await page.locator("#payouts").scrollIntoViewIfNeeded();
    await shot("5-job-payouts.png", { fullPage: false });

    // 4. Follow each slashed worker from the job's report to its evidence.
    for (const [worker, amount] of Object.entries(want.slashed || {})) {
      await page.goto(`${url}/jobs/${job}`);
      const row = page.locator(`#slash-table tr.slash[data-worker="${worker}" i]`);
      check((await row.count()) === 1, `the job page does not list slashed worker ${worker}`);
      check((await row.getAttribute("data-amount")) === amount, `slash of ${worker} shown != chain ${amount}`);
      const w = row.locator("a.addr");
      await w.click();
      await page.waitForURL(new RegExp(`/workers/${worker}$`, "i"));
      const ev = page.locator(`#slashes .evidence[data-job="${job}"]`);
      check((await ev.count()) === 1, `no evidence for job ${job} on ${worker}'s page`);
      check((await ev.getAttribute("data-amount")) === amount, `slash shown != chain ${amount}`);
      check((await page.locator("#evidence-match").count()) === 1, "evidence hash does not match");
      check((await page.locator("#signature-ok").count()) === 1, "signature not verified");
      check((await page.locator("#slashed .money").getAttribute("data-base-units")) === amount, "slashed total");
      await shot("6-worker-slashed.png");
      await page.locator("#slashes").scrollIntoViewIfNeeded();
      await shot("7-slash-evidence.png", { fullPage: false });
    }

    // 5. The network page after settlement.
    await page.goto(`${url}/`);
    check((await page.locator(`#jobs tr[data-job="${job}"] .badge.b-settled`).count()) === 1, "job not settled on the network page");
    await shot("10-network-after.png");

    // 6. Bad input in URLs: a clear page with the status.
    for (const [path, status, name] of [
      ["/jobs/not-a-number", 400, "8-bad-job-id.png"],
      [`/jobs/${"9".repeat(90)}`, 400, null],
      ["/jobs/424242", 404, "9-unknown-job.png"],
      ["/workers/0x1234", 400, null],
    ]) {
      const resp = await page.goto(`${url}${path}`);
      check(resp.status() === status, `${path} answered ${resp.status()}, not ${status}`);
      check((await page.locator(`#error[data-status="${status}"]`).count()) === 1, `${path}: no error page`);
      if (name) await shot(name);
    }
  }

  // 7. Without JavaScript the pages are the same, server-rendered.
  const noJs = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
  const p2 = await noJs.newPage();
  await p2.goto(`${url}/jobs/${job}`);
  check((await p2.locator(".grid .cell").count()) > 0, "no task grid without JavaScript");
  if (args.expected) check((await p2.locator("tr.payout").count()) > 0, "no payouts without JavaScript");
  await noJs.close();

  check(outside.length === 0, `fetched from outside the host: ${outside}`);
  check(errors.length === 0, `page errors: ${errors}`);
  console.log(JSON.stringify({ ok: true, screenshots: shots }));
} catch (e) {
  try {
    await shot("failure.png");
  } catch {}
  console.error(`explorer-browser: FAILED: ${e.message}`);
  console.log(JSON.stringify({ ok: false, error: e.message, screenshots: shots }));
  await browser.close();
  process.exit(1);
}
await browser.close();
