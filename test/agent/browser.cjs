// Headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core: opens a score link from
// a received email, checks the page, picks another score, writes a comment, double-clicks Send;
// then opens an unsubscribe link and confirms it. Prints TAP-style ok / not ok lines.
//   node browser.cjs SCORE_URL NEW_SCORE COMMENT UNSUBSCRIBE_URL SCREENSHOT
const { chromium } = require('playwright-core');

const [scoreUrl, newScore, comment, unsubUrl, shot] = process.argv.slice(2);
let failed = 0;
function check(ok, what) {
  console.log((ok ? 'ok - ' : 'not ok - ') + 'browser: ' + what);
  if (!ok) failed++;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    const resp = await page.goto(scoreUrl);
    const h = resp.headers();
    check(resp.status() === 200, 'the score link opens the answer page (HTTP ' + resp.status() + ')');
    check(/script-src 'nonce-/.test(h['content-security-policy'] || '') && h['x-frame-options'] === 'DENY' &&
          h['referrer-policy'] === 'no-referrer' && h['x-content-type-options'] === 'nosniff' &&
          /no-store/.test(h['cache-control'] || ''),
          'security headers (CSP with nonce, no framing, no referrer, nosniff, no-store)');
    const chosen = scoreUrl.split('/').pop();
    check(await page.isChecked('input[name=score][value="' + chosen + '"]'), 'the score of the link (' + chosen + ') is preselected');
    await page.waitForSelector('#saved:not([hidden])', { timeout: 10000 });
    check(true, 'the page itself recorded the score once shown (its own POST)');
    await page.click('input[name=score][value="' + newScore + '"] + span');
    await page.fill('#comment', comment);
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    await Promise.all([page.waitForNavigation(), page.dblclick('#send')]);
    const title = await page.textContent('h1');
    check(resp.ok() && title.length > 0 && !(await page.$('#f')), 'a double click on Send ends on the thank-you page: ' + title);
    check(errors.length === 0, 'no console errors (CSP allowed the page\'s own script and style)' +
          (errors.length ? ': ' + errors[0] : ''));
    if (unsubUrl && unsubUrl !== '-') {
      const u = await page.goto(unsubUrl);
      check(u.status() === 200 && (await page.$('#unsubscribe')) !== null, 'the unsubscribe link shows a confirmation page');
      await Promise.all([page.waitForNavigation(), page.click('#unsubscribe')]);
      const msg = await page.textContent('#message');
      check(msg.length > 0, 'confirming shows: ' + msg);
    }
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.log('not ok - browser: ' + e.message.split('\n')[0]); process.exit(1); });
