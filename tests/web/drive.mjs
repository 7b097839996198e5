// The real-browser test of issue 11: Debian's chromium (driven by playwright-core, no browser
// download) loads app/index.html, served here from another loopback origin than the sidecar,
// which runs matrix-js-sdk 43 bundled for the browser by esbuild, and does what Element Web
// does (see app/app.js): its homeserver check (AutoDiscovery), registration with an email,
// sign-out, password reset by email, sign-in with the new password, add a second email with
// addThreePidOnly, both listed by getThreePids. Every mailed link is opened in a second tab of
// the same browser: the confirmation page, its one button, the page it leads to.
//
//   node drive.mjs <sidecar base URL> <screenshot dir> <username> <email> <second email>
//
// Run by tests/e2e/web_client.rs, over stdio. Protocol lines on stdout start with "@@ ":
//   @@ APP <origin>                         the page's origin
//   @@ STEP <name> <facts as JSON>          a step passed
//   @@ SECRET <value>                       a password or access token (for the log check)
//   @@ WAIT_LINK <purpose> <sid> <client_secret>
//                                           a mail is on its way: answer one line on stdin,
//                                           "LINK <url>", the link it carries
//   @@ FAIL <step>: <why>                   the run failed (details on stderr)
//   @@ CONSOLE <summary>                    the browser's console errors, at the end
//   @@ TOOK <seconds>                       how long the run took
//   @@ OK                                   every step passed
// Exit 0 when every step passed, 1 on a failed step (the reason, the browser's console
// errors, failed requests and the step's requests on stderr), 2 when the whole run took
// longer than TOTAL_TIMEOUT_MS, 64 on bad usage. Screenshots: <dir>/NN-<step>.png.
// Environment: CHROMIUM (default /usr/bin/chromium).

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const TOTAL_TIMEOUT_MS = 90_000;
const PAGE_TIMEOUT_MS = 20_000;
const SDK_VERSION = "43.0.0";
const here = dirname(fileURLToPath(import.meta.url));

const say = (line) => process.stdout.write(`@@ ${line}\n`);
const elapsed = (() => {
    const started = Date.now();
    return () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
})();

const [baseUrl, shots, username, email, secondEmail] = process.argv.slice(2);
if (!baseUrl || !shots || !username || !email || !secondEmail) {
    process.stderr.write("usage: node drive.mjs <sidecar base URL> <screenshot dir> <username> <email> <second email>\n");
    process.exit(64);
}
const sidecarOrigin = new URL(baseUrl).origin;

// --- failure reporting ---------------------------------------------------------------------

let current = "build"; // the step under way, for the timeout message
const events = []; // console errors, page errors, failed requests, in every tab
let browser = null;
let server = null;
let bundleDir = null;

async function cleanUp() {
    await Promise.race([browser?.close(), new Promise((r) => setTimeout(r, 5_000))]).catch(() => {});
    server?.close();
    if (bundleDir) rmSync(bundleDir, { recursive: true, force: true });
}

let failing = false;
async function fail(why, details = [], code = 1) {
    if (failing) return new Promise(() => {}); // the first failure speaks and exits
    failing = true;
    say(`FAIL ${current}: ${why.split("\n")[0]}`);
    const lines = [`FAILED at step "${current}" after ${elapsed()}: ${why}`, ...details];
    process.stderr.write(lines.join("\n") + "\n");
    await cleanUp();
    process.exit(code);
}

const timer = setTimeout(
    () => fail(`the run took longer than ${TOTAL_TIMEOUT_MS} ms`, eventsSince(0), 2),
    TOTAL_TIMEOUT_MS,
);

function eventsSince(mark) {
    const seen = events.slice(mark);
    return seen.length ? ["browser console errors and failed requests:", ...seen.map((e) => `  ${e}`)] : ["(no console errors or failed requests in the browser)"];
}

function watch(page, tab) {
    page.on("console", (message) => {
        if (message.type() === "error" || message.type() === "warning") {
            events.push(`[${tab}] console.${message.type()}: ${message.text()}`);
        }
    });
    page.on("pageerror", (error) => events.push(`[${tab}] uncaught: ${error.message}`));
    page.on("requestfailed", (request) =>
        events.push(`[${tab}] request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`),
    );
}

let shotNumber = 0;
async function screenshot(page, name) {
    shotNumber++;
    const file = join(shots, `${String(shotNumber).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
}

// --- 1. the bundle and the other origin -----------------------------------------------------

bundleDir = mkdtempSync(join(tmpdir(), "web-client-"));
try {
    await esbuild.build({
        absWorkingDir: here,
        entryPoints: [join(here, "app/app.js")],
        bundle: true,
        format: "esm",
        splitting: true, // the SDK's crypto is loaded on demand, as in Element
        platform: "browser",
        target: ["chrome120"],
        outdir: bundleDir,
        sourcemap: true,
        logLevel: "silent",
    });
} catch (e) {
    await fail(`esbuild could not bundle app/app.js: ${e.message}`);
}
copyFileSync(join(here, "app/index.html"), join(bundleDir, "index.html"));

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".map": "application/json" };
server = createServer((request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url, "http://x").pathname)).replace(/^\/+/, "");
    const file = join(bundleDir, path === "" ? "index.html" : path);
    if (!file.startsWith(bundleDir + "/") || path.includes("..")) {
        response.writeHead(403).end();
        return;
    }
    try {
        const body = readFileSync(file);
        response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
        response.end(body);
    } catch {
        response.writeHead(404, { "content-type": "text/plain" }).end("not found");
    }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const appOrigin = `http://127.0.0.1:${server.address().port}`;
if (appOrigin === sidecarOrigin) await fail(`the page's origin ${appOrigin} is the sidecar's`);
say(`APP ${appOrigin}`);

mkdirSync(shots, { recursive: true });
for (const old of readdirSync(shots)) if (old.endsWith(".png")) rmSync(join(shots, old));

// --- 2. the browser --------------------------------------------------------------------------

current = "launch";
try {
    browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
        args: [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    });
} catch (e) {
    await fail(`chromium did not start: ${e.message.split("\n")[0]}`);
}
const context = await browser.newContext({ viewport: { width: 1100, height: 860 } });
context.setDefaultTimeout(PAGE_TIMEOUT_MS);
const page = await context.newPage();
watch(page, "app");

current = "load";
const loaded = await page.goto(`${appOrigin}/`, { waitUntil: "load" });
if (loaded?.status() !== 200) await fail(`the page answered ${loaded?.status()}`);
try {
    await page.waitForFunction(() => window.steps, null, { timeout: PAGE_TIMEOUT_MS });
} catch {
    await fail("the page's script did not start (no window.steps)", eventsSince(0));
}
const sdkVersion = await page.evaluate(() => window.sdkVersion);
if (sdkVersion !== SDK_VERSION) await fail(`the page runs matrix-js-sdk ${sdkVersion}, not ${SDK_VERSION}`);
say(`STEP load ${JSON.stringify({ sdk: sdkVersion, origin: appOrigin, homeserver: sidecarOrigin })}`);

/** Runs window.steps[name](args) in the page, screenshots the page, fails with the details. */
async function run(name, args, shot) {
    current = name;
    const mark = events.length;
    let result;
    try {
        result = await page.evaluate(([n, a]) => window.steps[n](a), [name, args]);
    } catch (e) {
        result = { ok: false, error: `page.evaluate: ${e.message.split("\n")[0]}`, requests: [] };
    }
    await screenshot(page, shot);
    if (!result.ok) {
        await fail(result.error, [
            "requests the step made (method path → HTTP status):",
            ...(result.requests.length ? result.requests.map((r) => `  ${r}`) : ["  (none)"]),
            ...eventsSince(mark),
        ]);
    }
    const { ok: _ok, ...facts } = result;
    const shown = Object.fromEntries(Object.entries(facts).filter(([k]) => !/secret|token/i.test(k)));
    say(`STEP ${name} ${JSON.stringify(shown)}`);
    return facts;
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/**
 * Asks the test for the mailed link, and follows it as a person would in a second tab of the
 * same browser: the confirmation page, its one button, the page it leads to. `landing` is
 * "sidecar" (the sidecar's own success page) or "app" (Element's next_link, this page).
 */
async function followLink(purpose, sid, clientSecret, landing) {
    current = `${purpose} link`;
    say(`WAIT_LINK ${purpose} ${sid} ${clientSecret}`);
    const { value, done } = await stdinLines.next();
    if (done || !value.startsWith("LINK ")) await fail(`expected "LINK <url>" on stdin, got ${done ? "EOF" : JSON.stringify(value)}`);
    const link = value.slice("LINK ".length).trim();
    const mark = events.length;
    const tab = await context.newPage();
    watch(tab, `${purpose} link tab`);
    const problems = [];
    try {
        const confirm = await tab.goto(link, { waitUntil: "load" });
        const seen = await tab.evaluate(() => ({
            forms: document.forms.length,
            buttons: document.querySelectorAll('form button:not([type]), form button[type="submit" i], form input[type="submit" i]').length,
            text: document.body.innerText.slice(0, 200),
        }));
        await screenshot(tab, `${purpose}-link`);
        if (confirm?.status() !== 200) problems.push(`the link answered ${confirm?.status()}: ${seen.text}`);
        if (new URL(tab.url()).origin !== sidecarOrigin) problems.push(`the link went to ${new URL(tab.url()).origin}, not the sidecar`);
        if (seen.forms !== 1 || seen.buttons !== 1) problems.push(`the confirmation page has ${seen.forms} forms, ${seen.buttons} buttons: ${seen.text}`);
        if (problems.length === 0) {
            const navigated = tab.waitForNavigation({ waitUntil: "load" });
            await tab.locator("form").locator('button:not([type]), button[type="submit" i], input[type="submit" i]').click();
            const result = await navigated;
            const url = new URL(tab.url());
            if (landing === "app") {
                // Element's next_link: back on this page's origin, with the sid appended.
                if (url.origin !== appOrigin) problems.push(`the button led to ${url.origin}${url.pathname}, not next_link on ${appOrigin}`);
                else if (url.searchParams.get("sid") !== sid) problems.push(`next_link carries sid ${url.searchParams.get("sid")}, not ${sid}`);
                else await tab.waitForFunction(() => window.landing, null, { timeout: PAGE_TIMEOUT_MS });
            } else {
                const status = result?.status() ?? 0;
                if (!(status >= 200 && status < 300)) problems.push(`the button's answer is ${status}: ${(await tab.locator("body").innerText()).slice(0, 200)}`);
                if (url.origin !== sidecarOrigin) problems.push(`the button led to ${url.origin}, not the sidecar's page`);
            }
            await screenshot(tab, `${purpose}-link-confirmed`);
        }
    } catch (e) {
        problems.push(e.message.split("\n")[0]);
    }
    await tab.close();
    if (problems.length) await fail(`the ${purpose} link in the second tab: ${problems.join("; ")}`, eventsSince(mark));
    say(`STEP ${purpose}-link ${JSON.stringify({ confirmed: true, landing })}`);
}

// --- 3. what Element does ---------------------------------------------------------------------

const random = () => Math.random().toString(36).slice(2, 10);
const oldPassword = `web-Old-${random()}`;
const newPassword = `web-New-${random()}`;
say(`SECRET ${oldPassword}`);
say(`SECRET ${newPassword}`);

await run("discover", { baseUrl }, "homeserver-check");

const started = await run("registerStart", { username, password: oldPassword, email }, "register-mail-sent");
await followLink("register", started.sid, started.clientSecret, "app");
const registered = await run("registerFinish", {}, "registered");
say(`SECRET ${registered.accessToken}`);

await run("logout", {}, "signed-out");

const reset = await run("resetStart", { email }, "reset-mail-sent");
await followLink("password", reset.sid, reset.clientSecret, "sidecar");
await run("resetFinish", { newPassword }, "password-changed");

const signedIn = await run("login", { username, password: newPassword, oldPassword }, "signed-in");
say(`SECRET ${signedIn.accessToken}`);

const adding = await run("addEmailStart", { email: secondEmail }, "add-email-mail-sent");
await followLink("add", adding.sid, adding.clientSecret, "sidecar");
await run("addEmailFinish", { password: newPassword }, "both-emails-listed");

// Every step passed; still, no request may have been blocked (CORS) or failed on the way, even
// one whose failure the SDK tolerated. (Answers with an error status are expected: 401 for UIA,
// 403 for the old password, 404 for the OAuth probe; the console lists those too.)
current = "done";
const blocked = events.filter((e) => /CORS policy|request failed:|uncaught:/.test(e));
if (blocked.length) await fail(`${blocked.length} blocked or failed requests or page errors`, eventsSince(0));
say(`CONSOLE ${events.length} errors/warnings, none a blocked or failed request`);
clearTimeout(timer);
say(`TOOK ${elapsed()}`);
say("OK");
await cleanUp();
process.exit(0);
