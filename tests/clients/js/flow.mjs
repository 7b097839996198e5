// matrix-js-sdk 43 (what Element is built on; it calls only /_matrix/client/v3) against an
// r0-only homeserver behind the sidecar, with no identity server configured — as Element runs
// once /versions says m.require_identity_server is false:
//
//   1. getVersions(): unstable_features["m.require_identity_server"] === false;
//   2. registration the way Element does it: InteractiveAuth picks the m.login.email.identity
//      flow, requestRegisterEmailToken(email, clientSecret, 1) without an id_server, the user
//      follows the mailed link, and InteractiveAuth's poll() completes registerRequest with
//      {type, session, threepid_creds: {sid, client_secret}};
//   3. "forgot password" the way Element does it: requestPasswordEmailToken, the link, then
//      setPassword({type, threepid_creds, threepidCreds}, newPassword) with no session;
//   4. loginRequest with the new password succeeds, with the old one is refused.
//
// Run by tests/e2e/clients.rs:  node flow.mjs <sidecar base URL> <email> <username>
// with the Node 22 of .e2e/node (scripts/install-test-deps): matrix-js-sdk 43 needs Node 22.
// Talks to the test over stdio: protocol lines start with "@@ ". When it needs the mailed link
// followed it prints "@@ WAIT_LINK <purpose> <sid> <client_secret>" and reads one line ("GO")
// from stdin. Anything else on stdout is the SDK's own logging. Exit 0 when every step passed,
// 1 with the reason on stderr, 2 when the whole run took longer than TOTAL_TIMEOUT_MS.

import { createInterface } from "node:readline";

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const TOTAL_TIMEOUT_MS = 60_000;
const POLL_INTERVAL_MS = 250;

logger.setLevel("warn");

const say = (line) => process.stdout.write(`@@ ${line}\n`);

class Failed extends Error {}

function expect(condition, what) {
    if (!condition) throw new Failed(what);
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Prints WAIT_LINK and waits for the test to have followed the link. */
async function linkFollowed(purpose, sid, clientSecret) {
    say(`WAIT_LINK ${purpose} ${sid} ${clientSecret}`);
    const { value, done } = await stdinLines.next();
    expect(!done && value.trim() === "GO", `expected GO on stdin after WAIT_LINK ${purpose}, got ${done ? "EOF" : value}`);
}

function describe(e) {
    if (e instanceof sdk.MatrixError) return `${e.httpStatus} ${e.errcode}: ${e.data?.error ?? e.message}`;
    return e?.stack ?? String(e);
}

async function refusedWith(promise, httpStatus, errcode, what) {
    try {
        await promise;
    } catch (e) {
        expect(e instanceof sdk.MatrixError, `${what}: ${describe(e)}`);
        expect(e.httpStatus === httpStatus && e.errcode === errcode, `${what}: expected ${httpStatus} ${errcode}, got ${describe(e)}`);
        return;
    }
    throw new Failed(`${what}: expected ${httpStatus} ${errcode}, got success`);
}

async function flow(baseUrl, email, username) {
    const oldPassword = "js-Old-" + Math.random().toString(36).slice(2);
    const newPassword = "js-New-" + Math.random().toString(36).slice(2);

    // Every client records the paths it requests (fetchFn is the SDK's transport hook), to
    // show which API version it speaks.
    const requested = [];
    const fetchFn = (url, init) => {
        requested.push(new URL(url).pathname);
        return globalThis.fetch(url, init);
    };
    const createClient = (opts) => sdk.createClient({ ...opts, fetchFn });

    // No idBaseUrl: no identity server, as in Element without one configured.
    const client = createClient({ baseUrl });
    expect(client.getIdentityServerUrl() === undefined, "an identity server is configured");

    // 1. /versions through the sidecar.
    const versions = await client.getVersions();
    expect(
        versions.unstable_features?.["m.require_identity_server"] === false,
        `m.require_identity_server is not false: ${JSON.stringify(versions)}`,
    );
    say(`versions ${JSON.stringify(versions.versions)} m.require_identity_server=false`);

    // 2. Registration with an email, through InteractiveAuth as Element's registration form.
    let emailRequested = null;
    const tokenRequested = new Promise((resolve, reject) => {
        emailRequested = { resolve, reject };
    });
    const stages = [];
    const backgroundErrors = [];
    const auth = new sdk.InteractiveAuth({
        matrixClient: client,
        inputs: { emailAddress: email },
        doRequest: async (authDict, background) => {
            try {
                return await client.registerRequest({
                    username,
                    password: oldPassword,
                    initial_device_display_name: "js-sdk flow",
                    ...(authDict ? { auth: authDict } : {}),
                });
            } catch (e) {
                if (background && !(e instanceof sdk.MatrixError && e.httpStatus === 401 && !e.errcode)) {
                    backgroundErrors.push(describe(e));
                }
                throw e;
            }
        },
        stateUpdated: (stage) => stages.push(stage),
        requestEmailToken: async (address, clientSecret, sendAttempt) => {
            try {
                const answer = await client.requestRegisterEmailToken(address, clientSecret, sendAttempt);
                emailRequested.resolve({ sid: answer.sid, clientSecret });
                return answer;
            } catch (e) {
                emailRequested.reject(e);
                throw e;
            }
        },
    });
    const registered = auth.attemptAuth();
    registered.catch(() => {}); // awaited below; a rejection before then is not unhandled
    const { sid, clientSecret } = await Promise.race([tokenRequested, registered.then(() => {
        throw new Failed("registration finished without an email stage");
    })]);
    expect(auth.getChosenFlow()?.stages.includes("m.login.email.identity"), `flow ${JSON.stringify(auth.getChosenFlow())}`);
    say(`register: stages ${JSON.stringify(stages)}, requestToken sid ${sid}, session ${auth.getSessionId()}`);
    await linkFollowed("register", sid, clientSecret);
    // Element's email stage polls until the link has been followed.
    let settled = false;
    registered.then(() => (settled = true), () => (settled = true));
    while (!settled) {
        await auth.poll();
        await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
        expect(backgroundErrors.length === 0, `register poll: ${backgroundErrors.join("; ")}`);
    }
    const account = await registered;
    expect(account.access_token && account.user_id, `register: ${JSON.stringify(account)}`);
    say(`registered ${account.user_id}`);

    const me = createClient({ baseUrl, accessToken: account.access_token, userId: account.user_id });
    const threepids = (await me.getThreePids()).threepids.map((t) => `${t.medium}:${t.address}`);
    expect(JSON.stringify(threepids) === JSON.stringify([`email:${email}`]), `3pids ${JSON.stringify(threepids)}`);
    say(`3pids ${JSON.stringify(threepids)}`);

    // 3. "Forgot password" from a fresh, signed-out client (Element's PasswordReset).
    const signedOut = createClient({ baseUrl });
    const resetSecret = signedOut.generateClientSecret();
    const reset = await signedOut.requestPasswordEmailToken(email, resetSecret, 1);
    expect(typeof reset.sid === "string", `requestPasswordEmailToken: ${JSON.stringify(reset)}`);
    say(`password: requestToken sid ${reset.sid}`);
    await linkFollowed("password", reset.sid, resetSecret);
    const creds = { sid: reset.sid, client_secret: resetSecret };
    await signedOut.setPassword(
        { type: "m.login.email.identity", threepid_creds: creds, threepidCreds: creds },
        newPassword,
        false,
    );
    say("setPassword done");

    // 4. The new password logs in; the old one no longer does.
    const identifier = { type: "m.id.user", user: username };
    const login = await signedOut.loginRequest({ type: "m.login.password", identifier, password: newPassword });
    expect(login.user_id === account.user_id && login.access_token, `login: ${JSON.stringify(login)}`);
    const whoami = await createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id })
        .whoami();
    expect(whoami.user_id === account.user_id, `whoami: ${JSON.stringify(whoami)}`);
    say(`login with the new password: ${login.user_id}`);
    await refusedWith(
        signedOut.loginRequest({ type: "m.login.password", identifier, password: oldPassword }),
        403,
        "M_FORBIDDEN",
        "login with the old password",
    );
    say("login with the old password: 403 M_FORBIDDEN");

    // The SDK spoke v3 only (and the unversioned /versions).
    const prefixes = [...new Set(requested.map((p) => p.split("/").slice(0, 4).join("/")))];
    const other = prefixes.filter((p) => p !== "/_matrix/client/v3" && p !== "/_matrix/client/versions");
    expect(other.length === 0, `requested other prefixes: ${JSON.stringify(prefixes)}`);
    say(`${requested.length} requests, prefixes ${JSON.stringify(prefixes)}`);
}

const [baseUrl, email, username] = process.argv.slice(2);
if (!baseUrl || !email || !username) {
    process.stderr.write("usage: node flow.mjs BASE_URL EMAIL USERNAME\n");
    process.exit(64);
}
const timer = setTimeout(() => {
    process.stderr.write(`FAILED: the flow took longer than ${TOTAL_TIMEOUT_MS} ms\n`);
    process.exit(2);
}, TOTAL_TIMEOUT_MS);
try {
    await flow(baseUrl, email, username);
} catch (e) {
    process.stderr.write(`FAILED: ${e instanceof Failed ? e.message : describe(e)}\n`);
    process.exit(1);
}
clearTimeout(timer);
say("OK");
process.exit(0);
