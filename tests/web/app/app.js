// The page of the real-browser test (issue 11): matrix-js-sdk 43, bundled for the browser by
// tests/web/drive.mjs (esbuild), served from another origin than the sidecar, doing what Element
// Web does against a homeserver:
//
//   discover        AutoDiscovery.fromDiscoveryConfig({"m.homeserver": {base_url}}), Element's
//                   check of its default_server_config (anything but SUCCESS is refused: a
//                   FAIL_ERROR with "does not meet the version requirements" is Element's
//                   "your homeserver is too old"), then /versions with a client, and the
//                   OAuth 2.0 metadata probe (v1/auth_metadata: 404 M_UNRECOGNIZED = no OIDC).
//   registerStart   Element's registration form: the flows (a bare registerRequest), the
//                   username check, then InteractiveAuth with inputs {emailAddress}; its
//                   requestEmailToken calls requestRegisterEmailToken with Element's next_link
//                   (makeRegistrationUrl: this page, #/register?client_secret&hs_url&session_id).
//   registerFinish  the email stage polls (InteractiveAuth.poll) until the mailed link has been
//                   followed, then the account exists; getThreePids lists the address.
//   logout          client.logout(true); the access token is dead afterwards.
//   resetStart      "Forgot password": requestPasswordEmailToken from a signed-out client.
//   resetFinish     setPassword({type: m.login.email.identity, threepid_creds, threepidCreds}).
//   login           GET /login flows, the old password refused, the new one accepted.
//   addEmailStart   Element's AddThreepid.addEmailAddress: requestAdd3pidEmailToken.
//   addEmailFinish  AddThreepid.checkEmailLinkClicked: addThreePidOnly({sid, client_secret}),
//                   again with password UIA if the server answers 401 with flows (Element's
//                   InteractiveAuthDialog); then getThreePids lists both addresses.
//
// Each step is a function on window.steps; the driver calls it with page.evaluate and gets
// {ok: true, ...facts} or {ok: false, step, error, requests}. Every step is also rendered as a
// line of the page (name, ✓/✗, the facts) for the screenshots.

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import sdkPackage from "matrix-js-sdk/package.json";

logger.setLevel("warn");

const POLL_INTERVAL_MS = 500;
const POLL_LIMIT_MS = 30_000;
const EMAIL_STAGE = "m.login.email.identity";

class Failed extends Error {}

function expect(condition, what) {
    if (!condition) throw new Failed(what);
}

/** A failure as a person debugging it wants to read it. */
function describe(e) {
    if (e instanceof Failed) return e.message;
    if (e instanceof sdk.MatrixError) {
        return `HTTP ${e.httpStatus} ${e.errcode ?? "(no errcode)"}: ${e.data?.error ?? e.message}`;
    }
    if (e instanceof sdk.HTTPError) return `HTTP ${e.httpStatus}, not a Matrix error: ${e.message}`;
    if (e instanceof sdk.ConnectionError) {
        return `${e.message} (the browser refused or could not make the request: a CORS or network failure, see the console errors)`;
    }
    return String(e?.stack ?? e);
}

// --- what the page shows -----------------------------------------------------------------

const $ = (id) => document.getElementById(id);
$("sdk-version").textContent = sdkPackage.version;
$("origin").textContent = location.origin;

const requests = [];

function renderRequests() {
    const rows = requests.slice(-12).map((r) => {
        const tr = document.createElement("tr");
        const bad = typeof r.status !== "number" || r.status >= 400;
        if (bad) tr.className = "bad";
        for (const [text, cls] of [[r.method, ""], [r.path, ""], [r.error ?? String(r.status), "status"]]) {
            const td = document.createElement("td");
            td.textContent = text;
            if (cls) td.className = cls;
            tr.append(td);
        }
        return tr;
    });
    $("requests").replaceChildren(...rows);
}

/** The SDK's transport hook (fetchFn) and AutoDiscovery's: records every request. */
async function recordingFetch(input, init) {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const entry = { method: init?.method ?? "GET", path: url.pathname, status: "…" };
    requests.push(entry);
    renderRequests();
    try {
        const response = await globalThis.fetch(input, init);
        entry.status = response.status;
        return response;
    } catch (e) {
        entry.status = "failed";
        entry.error = `failed: ${e?.message ?? e}`;
        throw e;
    } finally {
        renderRequests();
    }
}
sdk.AutoDiscovery.setFetchFn(recordingFetch);

function showStep(name) {
    const li = document.createElement("li");
    li.className = "run";
    const title = document.createElement("div");
    const mark = document.createElement("span");
    mark.className = "mark";
    mark.textContent = "…";
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    title.append(mark, label);
    const facts = document.createElement("div");
    facts.className = "facts";
    li.append(title, facts);
    $("steps").append(li);
    return {
        done(ok, text) {
            li.className = ok ? "ok" : "fail";
            mark.textContent = ok ? "✓" : "✗";
            facts.textContent = text;
        },
    };
}

/** A step: rendered, and its outcome returned to the driver as plain data. */
function step(name, title, run) {
    return async (args = {}) => {
        const shown = showStep(title);
        const first = requests.length;
        try {
            const { show, ...facts } = await run(args);
            shown.done(true, show);
            return { ok: true, ...facts };
        } catch (e) {
            const error = describe(e);
            shown.done(false, error);
            return {
                ok: false,
                step: name,
                error,
                requests: requests.slice(first).map((r) => `${r.method} ${r.path} → ${r.error ?? r.status}`),
            };
        }
    };
}

// --- the client, as Element holds it ------------------------------------------------------

const state = {
    baseUrl: null,
    username: null,
    email: null,
    client: null, // signed-in client, or null
    registration: null, // {auth, settled, result, error, backgroundErrors}
    reset: null, // {client, sid, clientSecret}
    add: null, // {sid, clientSecret}
};

const createClient = (opts) => sdk.createClient({ baseUrl: state.baseUrl, fetchFn: recordingFetch, ...opts });

const listed = (threepids) => threepids.map((t) => `${t.medium}:${t.address}`);

async function refusedWith(promise, httpStatus, errcode, what) {
    try {
        await promise;
    } catch (e) {
        expect(
            e instanceof sdk.MatrixError && e.httpStatus === httpStatus && e.errcode === errcode,
            `${what}: expected HTTP ${httpStatus} ${errcode}, got ${describe(e)}`,
        );
        return;
    }
    throw new Failed(`${what}: expected HTTP ${httpStatus} ${errcode}, got success`);
}

/** Element's makeRegistrationUrl: this page, #/register?<params>. */
function makeRegistrationUrl(params) {
    const query = Object.entries(params)
        .filter(([, v]) => v !== undefined && v !== null)
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
        .join("&");
    return `${location.protocol}//${location.host}${location.pathname}#/register${query ? "?" + query : ""}`;
}

const steps = {
    discover: step("discover", "Homeserver check (AutoDiscovery, as Element at start)", async ({ baseUrl }) => {
        const config = await sdk.AutoDiscovery.fromDiscoveryConfig({ "m.homeserver": { base_url: baseUrl } });
        const hs = config["m.homeserver"];
        if (hs.state !== sdk.AutoDiscovery.SUCCESS) {
            // What the homeserver listed, for the failure message only.
            let listedVersions = "(could not read /versions)";
            try {
                const answer = await fetch(`${baseUrl}/_matrix/client/versions`);
                listedVersions = `HTTP ${answer.status}: ${JSON.stringify((await answer.json()).versions)}`;
            } catch (e) {
                listedVersions = `(reading /versions failed: ${e?.message ?? e})`;
            }
            const tooOld = hs.error === sdk.AutoDiscovery.ERROR_UNSUPPORTED_HOMESERVER_SPEC_VERSION;
            throw new Failed(
                `AutoDiscovery m.homeserver state ${hs.state}, error "${hs.error}"` +
                    (tooOld ? " (Element: \"Your homeserver is too old\")" : "") +
                    `; /versions ${listedVersions}`,
            );
        }
        state.baseUrl = hs.base_url;
        document.getElementById("homeserver").textContent = state.baseUrl;
        const client = createClient({});
        const versions = await client.getVersions();
        const requireIdServer = versions.unstable_features?.["m.require_identity_server"];
        expect(requireIdServer === false, `m.require_identity_server is ${requireIdServer}, not false`);
        // Element then asks for OAuth 2.0 server metadata (next-gen auth); 404 M_UNRECOGNIZED
        // means "no OIDC, use the password and UIA APIs". (Element only logs other failures,
        // but an unknown endpoint must answer that, with CORS, like any other.)
        await refusedWith(client.getAuthMetadata(), 404, "M_UNRECOGNIZED", "GET /_matrix/client/v1/auth_metadata");
        return {
            show: `state ${hs.state}, base_url ${hs.base_url}\nversions ${JSON.stringify(versions.versions)}\nm.require_identity_server: false\nno OAuth 2.0 auth metadata (404 M_UNRECOGNIZED): password sign-in`,
            versions: versions.versions,
        };
    }),

    registerStart: step("registerStart", "Register with an email address", async ({ username, password, email }) => {
        state.username = username;
        state.email = email;
        const client = createClient({});
        // Element's Registration: a first request without auth, to learn the flows.
        let flows = null;
        try {
            await client.registerRequest({ initial_device_display_name: "web client check" });
            throw new Failed("registerRequest without auth succeeded");
        } catch (e) {
            if (e instanceof Failed) throw e;
            expect(e instanceof sdk.MatrixError && e.httpStatus === 401 && e.data?.flows, `the flows: ${describe(e)}`);
            flows = e.data.flows.map((f) => f.stages.join("+"));
        }
        // Element's RegistrationForm checks the username as it is typed.
        expect(await client.isUsernameAvailable(username), `username ${username} is not available`);

        let tokenRequested;
        const requested = new Promise((resolve, reject) => (tokenRequested = { resolve, reject }));
        const registration = { settled: false, result: null, error: null, backgroundErrors: [] };
        registration.auth = new sdk.InteractiveAuth({
            matrixClient: client,
            inputs: { emailAddress: email },
            doRequest: async (auth, background) => {
                try {
                    return await client.registerRequest({
                        username,
                        password,
                        initial_device_display_name: "web client check",
                        ...(auth ? { auth } : {}),
                    });
                } catch (e) {
                    // A poll before the link is followed gets 401 without errcode: expected.
                    if (background && !(e instanceof sdk.MatrixError && e.httpStatus === 401 && !e.errcode)) {
                        registration.backgroundErrors.push(describe(e));
                    }
                    throw e;
                }
            },
            stateUpdated: () => {},
            requestEmailToken: async (address, clientSecret, sendAttempt, session) => {
                try {
                    const answer = await client.requestRegisterEmailToken(
                        address,
                        clientSecret,
                        sendAttempt,
                        makeRegistrationUrl({ client_secret: clientSecret, hs_url: client.getHomeserverUrl(), is_url: client.getIdentityServerUrl(), session_id: session }),
                    );
                    tokenRequested.resolve({ sid: answer.sid, clientSecret });
                    return answer;
                } catch (e) {
                    tokenRequested.reject(e);
                    throw e;
                }
            },
        });
        const attempt = registration.auth.attemptAuth();
        attempt.then(
            (result) => Object.assign(registration, { settled: true, result }),
            (error) => Object.assign(registration, { settled: true, error }),
        );
        state.registration = registration;
        const { sid, clientSecret } = await Promise.race([
            requested,
            attempt.then(() => {
                throw new Failed("registration finished without an email stage");
            }),
        ]);
        const flow = registration.auth.getChosenFlow()?.stages ?? [];
        expect(flow.includes(EMAIL_STAGE), `chosen flow ${JSON.stringify(flow)} has no ${EMAIL_STAGE}`);
        return {
            show: `flows offered: ${flows.join(", ")}\nchosen: ${flow.join("+")}\nusername ${username} available\nmail requested for ${email} (sid ${sid}); waiting for the link`,
            sid,
            clientSecret,
        };
    }),

    registerFinish: step("registerFinish", "Registration completes after the link", async () => {
        const registration = state.registration;
        expect(registration, "registerStart did not run");
        const deadline = Date.now() + POLL_LIMIT_MS;
        let polls = 0;
        while (!registration.settled) {
            expect(Date.now() < deadline, `still not registered after ${polls} polls in ${POLL_LIMIT_MS} ms`);
            expect(registration.backgroundErrors.length === 0, `a poll failed: ${registration.backgroundErrors.join("; ")}`);
            await registration.auth.poll();
            polls++;
            await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
        }
        if (registration.error) throw registration.error;
        const account = registration.result;
        expect(account?.access_token && account?.user_id, `register answered ${JSON.stringify(account)}`);
        state.client = createClient({ accessToken: account.access_token, userId: account.user_id, deviceId: account.device_id });
        const whoami = await state.client.whoami();
        expect(whoami.user_id === account.user_id, `whoami says ${whoami.user_id}`);
        const threepids = listed((await state.client.getThreePids()).threepids);
        expect(
            JSON.stringify(threepids) === JSON.stringify([`email:${state.email}`]),
            `getThreePids lists ${JSON.stringify(threepids)}`,
        );
        return {
            show: `signed in as ${account.user_id} (device ${account.device_id}) after ${polls} polls\n3PIDs: ${threepids.join(", ")}`,
            userId: account.user_id,
            accessToken: account.access_token,
        };
    }),

    logout: step("logout", "Sign out", async () => {
        const client = state.client;
        expect(client, "not signed in");
        await client.logout(true);
        state.client = null;
        await refusedWith(client.whoami(), 401, "M_UNKNOWN_TOKEN", "whoami with the signed-out token");
        return { show: "logged out; the old access token is refused (401 M_UNKNOWN_TOKEN)" };
    }),

    resetStart: step("resetStart", "Forgot password: mail a link", async ({ email }) => {
        const client = createClient({});
        const clientSecret = client.generateClientSecret();
        const answer = await client.requestPasswordEmailToken(email, clientSecret, 1);
        expect(typeof answer.sid === "string", `requestPasswordEmailToken answered ${JSON.stringify(answer)}`);
        state.reset = { client, sid: answer.sid, clientSecret };
        return { show: `mail requested for ${email} (sid ${answer.sid}); waiting for the link`, sid: answer.sid, clientSecret };
    }),

    resetFinish: step("resetFinish", "Set the new password", async ({ newPassword }) => {
        const reset = state.reset;
        expect(reset, "resetStart did not run");
        const creds = { sid: reset.sid, client_secret: reset.clientSecret };
        await reset.client.setPassword({ type: EMAIL_STAGE, threepid_creds: creds, threepidCreds: creds }, newPassword, false);
        return { show: "setPassword with m.login.email.identity: done" };
    }),

    login: step("login", "Sign in with the new password", async ({ username, password, oldPassword }) => {
        const client = createClient({});
        const flows = (await client.loginFlows()).flows.map((f) => f.type);
        expect(flows.includes("m.login.password"), `login flows ${JSON.stringify(flows)}`);
        const identifier = { type: "m.id.user", user: username };
        await refusedWith(
            client.loginRequest({ type: "m.login.password", identifier, password: oldPassword }),
            403,
            "M_FORBIDDEN",
            "sign-in with the old password",
        );
        const login = await client.loginRequest({ type: "m.login.password", identifier, password, initial_device_display_name: "web client check" });
        expect(login.access_token && login.user_id, `login answered ${JSON.stringify(login)}`);
        state.client = createClient({ accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
        const whoami = await state.client.whoami();
        expect(whoami.user_id === login.user_id, `whoami says ${whoami.user_id}`);
        return {
            show: `login flows: ${flows.join(", ")}\nold password refused (403 M_FORBIDDEN)\nsigned in as ${login.user_id} (device ${login.device_id})`,
            userId: login.user_id,
            accessToken: login.access_token,
        };
    }),

    addEmailStart: step("addEmailStart", "Add a second email: mail a link", async ({ email }) => {
        const client = state.client;
        expect(client, "not signed in");
        const clientSecret = client.generateClientSecret();
        const answer = await client.requestAdd3pidEmailToken(email, clientSecret, 1);
        expect(typeof answer.sid === "string", `requestAdd3pidEmailToken answered ${JSON.stringify(answer)}`);
        state.add = { email, sid: answer.sid, clientSecret };
        return { show: `mail requested for ${email} (sid ${answer.sid}); waiting for the link`, sid: answer.sid, clientSecret };
    }),

    addEmailFinish: step("addEmailFinish", "Add the second email (add-3PID), list both", async ({ password }) => {
        const client = state.client;
        const add = state.add;
        expect(client && add, "addEmailStart did not run");
        const body = (auth) => ({ sid: add.sid, client_secret: add.clientSecret, auth });
        let how = "answered 200 without user-interactive auth";
        try {
            await client.addThreePidOnly(body(undefined));
        } catch (e) {
            // Element's AddThreepid: a 401 with flows opens InteractiveAuthDialog; its password
            // stage sends m.login.password with the user's identifier.
            if (!(e instanceof sdk.MatrixError && e.httpStatus === 401 && e.data?.flows)) throw e;
            const flows = e.data.flows.map((f) => f.stages.join("+"));
            expect(
                e.data.flows.some((f) => f.stages.length === 1 && f.stages[0] === "m.login.password"),
                `add-3PID asked for auth with flows ${JSON.stringify(flows)}, and none is the password alone`,
            );
            await client.addThreePidOnly(
                body({ type: "m.login.password", identifier: { type: "m.id.user", user: client.getUserId() }, password, session: e.data.session }),
            );
            how = `asked for auth (flows ${flows.join(", ")}), then answered 200 with the password`;
        }
        const threepids = listed((await client.getThreePids()).threepids);
        const want = [`email:${state.email}`, `email:${add.email}`];
        expect(
            JSON.stringify([...threepids].sort()) === JSON.stringify([...want].sort()),
            `getThreePids lists ${JSON.stringify(threepids)}, expected ${JSON.stringify(want)}`,
        );
        return { show: `addThreePidOnly ${how}\n3PIDs: ${threepids.join(", ")}`, threepids };
    }),
};

// A tab opened from the registration mail lands here through next_link (Element would pick up
// the registration in that tab; this page only says where it landed).
const fragment = location.hash.match(/^#\/register\?(.*)$/);
if (fragment) {
    const params = new URLSearchParams(fragment[1]);
    const shown = showStep("Arrived from the email link (next_link)");
    const sid = new URLSearchParams(location.search).get("sid");
    shown.done(
        Boolean(sid),
        `sid ${sid ?? "(missing)"}, session_id ${params.get("session_id") ?? "(missing)"}, hs_url ${params.get("hs_url") ?? "(missing)"}`,
    );
    window.landing = { sid, sessionId: params.get("session_id"), hsUrl: params.get("hs_url") };
}

window.sdkVersion = sdkPackage.version;
window.steps = steps;
