// The player matrix in a real browser: stock hls.js, dash.js and Shaka
// Player, each with its default configuration (players.html), play the test
// media's layouts in headless Chromium through Caddy's stream_limit, and
// this script checks what the limiter promises a viewer and an operator:
//
//   1. one slot per playback for as long as it plays, past its lease;
//   2. a second playback of the same user (limit 1) is refused at its
//      start, and the first plays on; reloaded, the first plays again
//      (its start continues its stream);
//   3. once the player is gone, its slot frees itself within the lease
//      after the media it was served would have played out;
//   5. every media request the player made carried the stream's token,
//      but the start the limiter redirects.
//
// (4, the origin never seeing a token, is checked by TestPlayers, which
// runs this script: see cmd/caddy/players_test.go for the environment.)
// It writes one result per player and layout to RESULTS, as JSON, and
// exits 0 whatever they say; it exits 1 only when it could not run.
import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { chromiumArgs } from './chromium.mjs';

const env = (name) => {
	if (!process.env[name]) throw new Error(`${name} is not set`);
	return process.env[name];
};
// mainURL is a site with the default max_buffer, where a playback holds
// its slot for all the media it was served: checks 1, 2 and 5. stopURL is
// one with a small max_buffer, so that the slot of a player that stopped
// frees within seconds however far ahead it had buffered: checks 3 and 5.
const mainURL = env('MAIN_URL');
const stopURL = env('STOP_URL');
const leaseMs = Number(env('LEASE_MS'));
const maxBufferMs = Number(env('MAX_BUFFER_MS'));
const cases = JSON.parse(env('CASES'));
const results = env('RESULTS');
const run = env('RUN'); // keeps the users of one run apart from an earlier one's
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
// playMs is how much of the video the first playback plays while its slot
// is watched: well past the lease, so that the slot is seen to outlive it.
const playMs = Math.max(10000, 2 * leaseMs);
// slackMs is what a loaded machine may add to the time a slot takes to
// free: polling, a busy CPU, the last requests of a page that takes
// seconds to close. No bound here is tight: on a quiet machine slots free
// 4.5-10.5 s after the close; with make test's other packages on the same
// two cores one took 17.8 s (pages then took 47 s to start).
const slackMs = 10000;
// startMs is how long a page may take to start playing: with every case
// at once on two cores that other work shares, up to a minute.
const startMs = 90000;

// Tokens as the limiter writes them: in a path (…/~sl-<id>.<claim>/file)
// or in a manifest's query (?stream_id=<id>.<claim>).
const tokenRE = /\/~sl-([0-9a-f-]{36})[./]|[?&]stream_id=([0-9a-f-]{36})/;
const streamOf = (url) => {
	const m = tokenRE.exec(url);
	return m && (m[1] || m[2]);
};

const browser = await chromium.launch({
	executablePath,
	headless: true,
	// Video plays without a gesture (it is muted anyway).
	args: [...chromiumArgs, '--autoplay-policy=no-user-gesture-required'],
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The browser's own User-Agent, which each screen extends with its name:
// screens are devices, and the limiter tells devices apart by address and
// User-Agent (every screen here has the same address).
const browserUA = await (async () => {
	const page = await browser.newPage();
	const ua = await page.evaluate(() => navigator.userAgent);
	await page.close();
	return ua;
})();

// open starts one screen: a browser context of its own (a device, with its
// own cache and User-Agent) on one player page, logging every response it
// gets.
async function open(base, c, user, device) {
	const context = await browser.newContext({ userAgent: `${browserUA} device/${device}` });
	const screen = { context, origin: new URL(base).origin, log: [], pageErrors: [], t0: Date.now() };
	const at = () => Date.now() - screen.t0;
	context.on('response', (r) => screen.log.push({ ms: at(), status: r.status(), url: r.url() }));
	context.on('requestfailed', (r) => screen.log.push({ ms: at(), status: `failed (${r.failure()?.errorText})`, url: r.url() }));
	screen.page = await context.newPage();
	screen.page.on('pageerror', (err) => screen.pageErrors.push(err.message));
	const q = new URLSearchParams({ player: c.player, src: c.src, user });
	await screen.page.goto(`${base}/players/players.html?${q}`);
	return screen;
}

async function state(screen) {
	return screen.page.evaluate(() => {
		const v = document.querySelector('video');
		const b = v.buffered;
		return {
			time: v.currentTime,
			ahead: b.length ? b.end(b.length - 1) - v.currentTime : 0,
			fatal: window.matrix.fatal,
			errors: window.matrix.errors,
			videoError: v.error && `${v.error.code} ${v.error.message}`,
		};
	});
}

// listed is the user's live streams as the limiter lists them.
async function listed(base, user) {
	return (await listing(base, user)).streams.map((s) => s.id);
}

// listing is the limiter's whole answer: the limit, and each stream's id,
// start and expiry (what tells a lapse from a re-admission, or another
// server on the port, when a sample is off).
async function listing(base, user) {
	const resp = await fetch(`${base}/streams`, { headers: { 'X-User-Id': user } });
	if (resp.status !== 200) throw new Error(`GET /streams: ${resp.status}`);
	return resp.json();
}

// watchSlots polls the user's live streams until stop, on its own clock:
// a page busy playing must not thin out the samples.
const pollMs = 500;
function watchSlots(base, user) {
	const seen = [];
	const t0 = Date.now();
	let stopped = false;
	const done = (async () => {
		while (!stopped) {
			const ms = Date.now() - t0;
			const list = await listing(base, user);
			seen.push({ ms, ids: list.streams.map((s) => s.id), list });
			await sleep(pollMs);
		}
	})();
	return {
		stop: async () => {
			stopped = true;
			await done;
			return seen;
		},
	};
}

// media is the screen's requests for video: those to the limiter's site
// but for the page's own files (a blob: URL, which a player makes for its
// worker, has its page's origin too).
const media = (screen) =>
	screen.log.filter((e) => {
		const u = new URL(e.url);
		return u.protocol === 'http:' && u.origin === screen.origin && !u.pathname.startsWith('/players/');
	});

const show = (entries) => entries.map((e) => `${String(e.ms).padStart(6)} ms  ${e.status}  ${e.url}`).join('\n');

// checkRequests holds a screen that played to checks 5 and to its
// statuses: the start (a master, VOD or static manifest served at once,
// 200; anything else redirected, 307) is its one request without a token;
// every other carries the one stream it was given; none is refused.
// closedAt (ms on the screen's clock) is when the test closed it: requests
// cut by that are expected.
function checkRequests(screen, problems, closedAt = Infinity) {
	const reqs = media(screen);
	const untokened = reqs.filter((e) => !streamOf(e.url));
	if (untokened.length !== 1 || ![200, 307].includes(untokened[0].status)) {
		problems.push(`want one request without a token, the start (200 or 307); got:\n${show(untokened)}`);
	}
	const streams = new Set(reqs.map((e) => streamOf(e.url)).filter(Boolean));
	if (streams.size !== 1) problems.push(`want one stream in the tokens; got ${[...streams].join(', ') || 'none'}`);
	// A request the player itself gave up on fails as ERR_ABORTED; one the
	// limiter cut fails otherwise.
	const bad = reqs.filter((e) => (typeof e.status === 'number' ? e.status >= 400 : e.ms < closedAt && !e.status.includes('ERR_ABORTED')));
	if (bad.length) problems.push(`requests refused or failed while playing:\n${show(bad)}`);
	return [...streams][0];
}

async function runCase(c) {
	const result = { player: c.player, layout: c.layout, problems: [], notes: [], logs: {} };
	const user = `${c.player}-${c.layout}-${run}`;
	const screens = {}; // by name: first, second, stopped
	try {
		// Each on a site and with a user of its own: side by side, the case
		// takes as long as the longer of the two.
		const done = await Promise.allSettled([
			playAndRefuse(c, user, screens, result),
			stopAndFree(c, `${user}-stop`, screens, result),
		]);
		for (const d of done) if (d.status === 'rejected') result.problems.push(d.reason.message);
	} finally {
		for (const [name, screen] of Object.entries(screens)) {
			await screen.context.close().catch(() => {});
			const reqs = media(screen);
			result.logs[name] = show(reqs);
			result.notes.push(`${name} screen's requests: ${tally(reqs.map((e) => e.status))}`);
			if (screen.pageErrors.length) result.problems.push(`${name}: page errors: ${screen.pageErrors.join('; ')}`);
		}
	}
	return result;
}

// playAndRefuse checks 1, 2 and 5: the first playback holds one slot while
// it plays, a second one of the same user is refused at its start, and the
// first plays on.
async function playAndRefuse(c, user, screens, { problems, notes }) {
	const first = (screens.first = await open(mainURL, c, user, 'first'));
	let s = await playedTo(first, 0.1);
	notes.push(`first playback started ${Date.now() - first.t0} ms after its page opened`);

	const slots = watchSlots(mainURL, user);
	let seen;
	let secondGaveUp = null; // the first's time when the second reported its error
	try {
		const second = (screens.second = await open(mainURL, c, user, 'second'));
		const playBy = Date.now() + playMs + startMs;
		for (;;) {
			s = await state(first);
			if (s.fatal) throw new Error(`the first playback failed at ${s.time.toFixed(1)} s: ${s.errors.join('; ')}`);
			if (secondGaveUp === null) {
				const s2 = await state(second);
				if (s2.fatal) {
					secondGaveUp = s.time;
					notes.push(`second playback refused: ${s2.fatal}`);
					if (s2.time > 0) problems.push(`the refused playback played ${s2.time.toFixed(1)} s`);
				}
			}
			if (s.time * 1000 >= playMs && secondGaveUp !== null && s.time >= secondGaveUp + 1) break;
			if (Date.now() > playBy) {
				throw new Error(`at ${s.time.toFixed(1)} s of playback, ${secondGaveUp === null ? 'the second playback had reported no error' : 'the first had stopped'}`);
			}
			await sleep(500);
		}
	} finally {
		seen = await slots.stop();
	}
	notes.push(`played ${s.time.toFixed(1)} s (${s.ahead.toFixed(1)} s buffered ahead); the user's stream count every ${pollMs} ms: ${summarize(seen.map((x) => x.ids.length))}`);
	const id = seen[0]?.ids[0];
	const off = seen.filter(({ ids }) => ids.length !== 1 || ids[0] !== id);
	if (off.length) {
		problems.push(`want the one stream ${id} listed throughout; got, ms after the first played:\n${off.map(({ ms, list }) => `${ms}: ${JSON.stringify(list)}`).join('\n')}`);
	}
	if (s.errors.length) notes.push(`the first player reported: ${s.errors.join('; ')}`);
	const stream = checkRequests(first, problems);
	if (stream !== id) problems.push(`the tokens carry stream ${stream}, the limiter lists ${id}`);
	// The renditions layout keeps its audio apart (EXT-X-MEDIA): a player
	// that plays it fetches that rendition through the same stream.
	if (c.layout === 'renditions' && !media(first).some((e) => new URL(e.url).pathname.startsWith('/renditions/a/'))) {
		problems.push('the audio rendition (/renditions/a/) was never fetched');
	}
	const refused = media(screens.second);
	if (!refused.length || refused.some((e) => e.status !== 429 || streamOf(e.url))) {
		problems.push(`want only refused starts (429, no token) from the second playback; got:\n${show(refused)}`);
	}

	// A reload at the limit is the same screen starting over: its start
	// continues its stream, and it plays again.
	const reloading = Date.now();
	await first.page.reload();
	const again = await playedTo(first, 0.5);
	notes.push(`reloaded at the limit: playing again ${Date.now() - reloading} ms after the reload`);
	if (again.fatal) problems.push(`after a reload: ${again.fatal}`);
	const after = await listed(mainURL, user);
	if (after.length !== 1) {
		problems.push(`after a reload at the limit the user's streams are [${after.join(', ')}]; want one`);
	}
}

// stopAndFree checks 3 and 5: a player that stopped frees its slot by
// itself, on the site whose small max_buffer bounds how long the media it
// was served holds the slot.
async function stopAndFree(c, user, screens, { problems, notes }) {
	const stopped = (screens.stopped = await open(stopURL, c, user, 'stopped'));
	const s = await playedTo(stopped, 2);
	const before = await listed(stopURL, user);
	if (before.length !== 1) problems.push(`before it stopped, the user's streams are [${before.join(', ')}]`);
	const closing = Date.now();
	await stopped.context.close();
	// Until close returns, the page may still fetch (and be served) media.
	const closedAt = Date.now();
	checkRequests(stopped, problems, closing - stopped.t0);
	const bound = maxBufferMs + leaseMs + slackMs;
	let freedAfter = null;
	while (freedAfter === null && Date.now() - closedAt < bound + 5000) {
		if ((await listed(stopURL, user)).length === 0) freedAfter = Date.now() - closedAt;
		else await sleep(250);
	}
	notes.push(`closed at ${s.time.toFixed(1)} s with ${s.ahead.toFixed(1)} s buffered ahead (closing took ${closedAt - closing} ms); slot free ${freedAfter ?? 'not'} ms later`);
	if (freedAfter === null || freedAfter > bound) {
		problems.push(`the closed player's slot was held ${freedAfter ?? Date.now() - closedAt} ms: more than max_buffer + lease + ${slackMs} ms slack`);
	}
}

// playedTo waits for a screen's video to play past seconds.
async function playedTo(screen, seconds) {
	const by = Date.now() + startMs;
	for (;;) {
		const s = await state(screen);
		if (s.time >= seconds) return s;
		if (s.fatal || Date.now() > by) throw new Error(`the playback never reached ${seconds} s: ${JSON.stringify(s)}`);
		await sleep(200);
	}
}

// tally counts each value: "200 ×41, 307 ×1".
function tally(values) {
	const n = new Map();
	for (const v of values) n.set(v, (n.get(v) || 0) + 1);
	return [...n].map(([v, k]) => `${v} ×${k}`).join(', ') || 'none';
}

// summarize writes a series of counts as runs: "1 ×18".
function summarize(counts) {
	const runs = [];
	for (const n of counts) {
		if (runs.length && runs.at(-1)[0] === n) runs.at(-1)[1]++;
		else runs.push([n, 1]);
	}
	return runs.map(([n, k]) => `${n} ×${k}`).join(', ');
}

try {
	const out = [];
	// Every case at once, each with users of its own: one after another
	// they would take minutes.
	await Promise.all(
		cases.map(async (c) => {
			const started = Date.now();
			const r = await runCase(c);
			console.log(`${r.problems.length ? 'FAIL' : 'ok  '} ${c.player} ${c.layout} (${Date.now() - started} ms)`);
			out.push(r);
		}),
	);
	fs.writeFileSync(results, JSON.stringify(out, null, '\t'));
} finally {
	await browser.close();
}
