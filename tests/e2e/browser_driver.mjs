// A headless Chromium driven over the DevTools protocol by playwright-core, for tests/e2e/browser.py.
// Protocol: one JSON command per line on stdin ({"id", "op", ...}), one JSON answer per line on stdout
// ({"id", "ok": true, "value"} or {"id", "ok": false, "error"}). Console errors, page errors and failed
// requests are collected and handed over by the "problems" command.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = mkdtempSync(join(tmpdir(), 'mlops-chromium-'));
// Without the background-networking flags Chromium keeps calling home, which floods a closed network.
const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const context = await chromium.launchPersistentContext(profile, {
  executablePath, headless: true, args, viewport: { width: 1360, height: 900 },
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(20000);
let problems = [];
page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`); });
page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
page.on('requestfailed', (req) => problems.push(`requestfailed: ${req.url()} ${req.failure()?.errorText}`));
page.on('response', (res) => { if (res.status() >= 400) problems.push(`http ${res.status()}: ${res.url()}`); });

const ops = {
  async goto({ url }) {
    const response = await page.goto(url, { waitUntil: 'load' });
    return { status: response ? response.status() : null, url: page.url(),
             headers: response ? await response.allHeaders() : {} };
  },
  async click({ selector }) { await page.click(selector); return null; },
  async fill({ selector, value }) { await page.fill(selector, value); return null; },
  async text({ selector }) { return await page.textContent(selector); },
  async count({ selector }) { return await page.locator(selector).count(); },
  async attribute({ selector, name }) { return await page.getAttribute(selector, name); },
  async evaluate({ expression }) { return await page.evaluate(expression); },
  async wait_for_text({ selector, text }) {
    await page.waitForFunction(([s, t]) => {
      const el = document.querySelector(s);
      return el && el.textContent.includes(t);
    }, [selector, text]);
    return await page.textContent(selector);
  },
  async wait_for({ selector }) { await page.waitForSelector(selector); return null; },
  async wait_until({ expression }) { await page.waitForFunction(expression); return null; },
  async screenshot({ path }) { await page.screenshot({ path, fullPage: true }); return path; },
  async url() { return page.url(); },
  async problems() { const found = problems; problems = []; return found; },
};

async function close() {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.op === 'close') break;
  let answer;
  try {
    answer = { id: command.id, ok: true, value: await ops[command.op](command) };
  } catch (error) {
    answer = { id: command.id, ok: false, error: String(error && error.message || error) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await close();
process.stdout.write(JSON.stringify({ id: 'closed', ok: true }) + '\n');
