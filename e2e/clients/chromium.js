// One launcher for the e2e tests' browser scripts: Debian's headless Chromium
// (/usr/bin/chromium) through playwright-core, which never downloads a
// browser here (only executablePath is used), in a fresh user-data dir that
// is removed at the end. Every script prints its steps as JSON lines
// ({"step": NAME, ...}); a failure prints an "error" step, and "end" is
// always the last line.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

// out prints one step.
const out = (step, o = {}) => process.stdout.write(JSON.stringify({ ...o, step }) + '\n');

// run launches Chromium (extraArgs after the flags every test needs on this
// closed network), calls body(open) and always ends with "end".
// open(name, url) opens url in a new page whose console and errors go to
// stderr, tagged with name.
async function run(timeout, extraArgs, body) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-chromium-'));
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      timeout,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
    });
    const open = async (name, url) => {
      const page = await ctx.newPage();
      page.on('console', (m) => process.stderr.write(`[${name} console] ${m.text()}\n`));
      page.on('pageerror', (e) => process.stderr.write(`[${name} pageerror] ${e}\n`));
      await page.goto(url, { timeout });
      return page;
    };
    await body(open);
  } catch (e) {
    out('error', { error: String(e && e.stack || e) });
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  out('end');
}

module.exports = { out, run };
