// Follows an email link the way a person would, in the Debian chromium (driven by
// playwright-core, no browser download), and checks the pages it meets:
//
//   1. GET the link: the confirmation page must answer 200 and hold exactly one <form>
//      (method POST, hidden sid/client_secret/token) with exactly one submit button, and no
//      other control anywhere (no visible input, select, textarea or second button), and must
//      not be wider than the screen. Screenshot: confirm-<viewport>.png.
//   2. Click the button and wait for the navigation. Then, by <expect>:
//        success             the answer is 2xx;       screenshot success-<viewport>.png
//        failure             the answer is 4xx/5xx;   screenshot failure-<viewport>.png
//        redirect:<prefix>   the browser ends on a URL starting with <prefix> (that URL is
//                            answered here by a stub, so nothing needs to listen there).
//
// Viewports: phone 375x740 with JavaScript DISABLED (proves the pages need none), desktop
// 1280x800 with JavaScript on. A link works only once, so each viewport needs its own link:
//
//   node link-page.mjs [--viewport phone|desktop] <link-url> <screenshot-dir> <expect>
//       one pass, in the given viewport (default phone)
//   node link-page.mjs --phone <link-url> --desktop <link-url> <screenshot-dir> <expect>
//       both passes, each with its own link
//   option --text <substring>: the final page's text must also contain <substring>
//       (e.g. the failure reason)
//   option --locale <tag>: the browser's language (its Accept-Language), e.g. de
//   option --lang <tag>: the confirmation page's <html lang> must be <tag>
//   option --confirm-text <substring>: the confirmation page's text must contain <substring>
//
// Prints one JSON line per pass: {viewport, ok, errors, confirm: {...}, result: {...}} with
// title, URL and HTTP status of each page. Exits 0 when every check passed, 1 on any mismatch,
// 2 on bad usage. Environment: CHROMIUM (default /usr/bin/chromium).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const VIEWPORTS = {
  phone: { viewport: { width: 375, height: 740 }, javaScriptEnabled: false, isMobile: true, hasTouch: true },
  desktop: { viewport: { width: 1280, height: 800 }, javaScriptEnabled: true },
};
const TIMEOUT_MS = 15_000;
const USAGE = `usage:
  node link-page.mjs [--viewport phone|desktop] [--text <substring>] <link-url> <screenshot-dir> <expect>
  node link-page.mjs --phone <link-url> --desktop <link-url> [--text <substring>] <screenshot-dir> <expect>
  options: [--locale <tag>] [--lang <tag>] [--confirm-text <substring>]
where <expect> is success, failure or redirect:<url-prefix>`;

function usage(message) {
  console.error(`link-page.mjs: ${message}\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv) {
  const links = {};
  const positional = [];
  let viewport = 'phone';
  let text = null;
  let locale = null;
  let lang = null;
  let confirmText = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${arg} needs a value`));
    if (arg === '--viewport') viewport = value();
    else if (arg === '--phone') links.phone = value();
    else if (arg === '--desktop') links.desktop = value();
    else if (arg === '--text') text = value();
    else if (arg === '--locale') locale = value();
    else if (arg === '--lang') lang = value();
    else if (arg === '--confirm-text') confirmText = value();
    else if (arg.startsWith('--')) usage(`unknown option ${arg}`);
    else positional.push(arg);
  }
  if (!(viewport in VIEWPORTS)) usage(`unknown viewport ${viewport}`);
  const named = Object.keys(links).length > 0;
  if (positional.length !== (named ? 2 : 3)) usage('wrong number of arguments');
  if (!named) links[viewport] = positional.shift();
  const [dir, expect] = positional;
  if (!/^(success|failure|redirect:.+)$/.test(expect)) usage(`bad <expect> ${expect}`);
  return { links, dir, expect, text, locale, lang, confirmText };
}

// What the confirmation page holds, read from the DOM (works with JavaScript disabled: the
// evaluation runs in Playwright's own world, not the page's).
function inspectConfirmPage() {
  const submitSelector = 'button:not([type]), button[type="submit" i], input[type="submit" i], input[type="image" i]';
  const forms = [...document.querySelectorAll('form')];
  const form = forms[0];
  const controls = [...document.querySelectorAll('button, input, select, textarea')].filter(
    (el) => !(el.tagName === 'INPUT' && el.type === 'hidden'),
  );
  return {
    forms: forms.length,
    method: form ? (form.getAttribute('method') || 'get').toLowerCase() : null,
    action: form ? form.action : null,
    hidden: form ? [...form.querySelectorAll('input[type="hidden" i]')].map((el) => el.name) : [],
    submitButtons: form ? form.querySelectorAll(submitSelector).length : 0,
    controls: controls.length,
    scripts: document.querySelectorAll('script').length,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    lang: document.documentElement.lang,
    text: document.body.innerText,
  };
}

async function pass(browser, viewportName, link, { dir, expect, text, locale, lang, confirmText }) {
  const errors = [];
  const report = { viewport: viewportName, link, ok: false, errors, confirm: null, result: null };
  const context = await browser.newContext({
    ...VIEWPORTS[viewportName],
    serviceWorkers: 'block',
    ...(locale ? { locale } : {}),
  });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  const redirectPrefix = expect.startsWith('redirect:') ? expect.slice('redirect:'.length) : null;
  // Every URL the tab navigates to, redirects included: the client's next_link need not exist
  // (nothing may listen there), we only check that the browser was sent to it.
  const navigations = [];
  page.on('request', (request) => {
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) navigations.push(request.url());
  });
  try {
    const response = await page.goto(link, { waitUntil: 'load' });
    const seen = await page.evaluate(inspectConfirmPage);
    const { text: _pageText, ...shown } = seen;
    report.confirm = { title: await page.title(), url: page.url(), status: response?.status() ?? null, ...shown };
    await page.screenshot({ path: join(dir, `confirm-${viewportName}.png`), fullPage: true });

    if (report.confirm.status !== 200) errors.push(`confirmation page answered ${report.confirm.status}, not 200`);
    if (seen.forms !== 1) errors.push(`confirmation page has ${seen.forms} forms, not 1`);
    if (seen.method !== 'post') errors.push(`the form's method is ${seen.method}, not post`);
    for (const name of ['sid', 'client_secret', 'token']) {
      if (!seen.hidden.includes(name)) errors.push(`the form has no hidden ${name}`);
    }
    if (seen.submitButtons !== 1) errors.push(`the form has ${seen.submitButtons} submit buttons, not 1`);
    if (lang !== null && seen.lang !== lang) errors.push(`the page's lang is ${seen.lang}, not ${lang}`);
    if (confirmText !== null && !seen.text.includes(confirmText)) {
      errors.push(`the confirmation page does not say ${JSON.stringify(confirmText)}`);
    }
    if (seen.controls !== 1) errors.push(`the page has ${seen.controls} visible controls, not just the button`);
    // Against the device's width: a phone widens its layout viewport for a page without
    // <meta name=viewport content="width=device-width"> or with content too wide.
    const width = VIEWPORTS[viewportName].viewport.width;
    if (seen.scrollWidth > width) errors.push(`the page is ${seen.scrollWidth}px wide on a ${width}px screen`);
    if (seen.forms !== 1 || seen.submitButtons !== 1) return report;

    const button = page.locator('form').locator(
      'button:not([type]), button[type="submit" i], input[type="submit" i], input[type="image" i]',
    );
    if (!(await button.isVisible())) errors.push('the submit button is not visible');
    const navigated = page.waitForNavigation({ waitUntil: 'load' }).then(
      (response) => ({ response }),
      (error) => ({ error }),
    );
    const before = navigations.length;
    await button.click();
    const { response: result, error: loadError } = await navigated;
    const hops = navigations.slice(before);
    report.result = {
      title: loadError ? null : await page.title(),
      url: hops.at(-1) ?? page.url(),
      status: result?.status() ?? null,
      hops,
      loadError: loadError ? String(loadError.message).split('\n')[0] : null,
    };
    const status = report.result.status ?? 0;

    if (redirectPrefix) {
      // Loading next_link may fail (nothing listens there): fine, the browser went there.
      if (!report.result.url.startsWith(redirectPrefix)) {
        errors.push(`ended on ${report.result.url}, not under ${redirectPrefix}`);
      }
      if (hops.length < 2) errors.push('the form POST was not answered by a redirect');
    } else if (loadError) {
      errors.push(report.result.loadError);
    } else {
      await page.screenshot({ path: join(dir, `${expect}-${viewportName}.png`), fullPage: true });
      if (expect === 'success' && !(status >= 200 && status < 300)) {
        errors.push(`expected a success page, got status ${status}`);
      }
      if (expect === 'failure' && !(status >= 400)) errors.push(`expected a failure page, got status ${status}`);
      if (new URL(page.url()).origin !== new URL(link).origin) errors.push(`left the sidecar for ${page.url()}`);
    }
    if (text !== null) {
      const body = await page.locator('body').innerText();
      if (!body.includes(text)) errors.push(`the final page does not say ${JSON.stringify(text)}`);
    }
  } catch (e) {
    errors.push(String(e?.message ?? e).split('\n')[0]);
  } finally {
    await context.close();
  }
  report.ok = errors.length === 0;
  return report;
}

const opts = parseArgs(process.argv.slice(2));
mkdirSync(opts.dir, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let ok = true;
try {
  for (const [viewportName, link] of Object.entries(opts.links)) {
    const report = await pass(browser, viewportName, link, opts);
    console.log(JSON.stringify(report));
    ok &&= report.ok;
  }
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
