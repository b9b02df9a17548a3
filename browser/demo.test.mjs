// Drives the demo page in headless Chromium (Debian's chromium package,
// through playwright-core) against a running demo Caddy: three screens play,
// the fourth shows the limiter's refusal, and closing one lets the fourth
// start. It saves screenshots of both moments. Meanwhile a second page
// plays a 48 s title whole with stock hls.js (which fetches all of it in
// its first seconds), and the limiter must count that playback exactly
// once from start to end, longer than the lease, and free it within the
// lease once it has ended.
//
//   BASE_URL=http://127.0.0.1:8080 SCREENSHOT_DIR=out node demo.test.mjs
//
// `make test-browser` runs it through TestDemoPageInBrowser (cmd/caddy),
// which starts the demo Caddyfile on free ports first.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { chromiumArgs as args } from './chromium.mjs';

const base = process.env.BASE_URL || 'http://localhost:8080';
const admin = process.env.ADMIN_URL || 'http://localhost:2019';
const shots = process.env.SCREENSHOT_DIR || path.join(import.meta.dirname, 'out');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
// DEMO_USER=alice-$$ gives a run against a long-lived `make run` a user of
// its own (a crashed run leaves leases for 30 s).
const user = process.env.DEMO_USER || 'alice';
const lease = 30000; // the demo Caddyfile's

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'streamlimit-chromium-'));
fs.mkdirSync(shots, { recursive: true });
const context = await chromium.launchPersistentContext(profile, {
	executablePath,
	headless: true,
	args,
	viewport: { width: 1440, height: 960 },
	deviceScaleFactor: 1,
});

const problems = [];
const segmentURLs = [];
let page;

function step(what) {
	console.log(`· ${what}`);
}

// state reads what the page shows: each screen's state, segment count,
// stream id, playback position and overlay, and the panel's stream ids.
async function state() {
	return page.evaluate(() => ({
		screens: [...document.querySelectorAll('.screen')].map((el) => ({
			n: Number(el.dataset.screen),
			state: el.dataset.state,
			segments: Number(el.dataset.segments || 0),
			id: el.dataset.streamId,
			time: el.querySelector('video').currentTime,
			overlay: [...el.querySelectorAll('.overlay p')].map((p) => p.textContent).join(' | '),
		})),
		listed: [...document.querySelectorAll('#streams li')].map((li) => li.dataset.streamId),
	}));
}

// waitUntil polls the page's state until check passes, and fails with the
// last state seen.
async function waitUntil(what, check, timeoutMs = 30000) {
	const deadline = Date.now() + timeoutMs;
	let last;
	for (;;) {
		last = await state();
		if (check(last)) return last;
		if (Date.now() > deadline) {
			throw new Error(`never happened: ${what}\nlast state: ${JSON.stringify(last, null, 2)}`);
		}
		await new Promise((r) => setTimeout(r, 200));
	}
}

const playing = (s, n) => {
	const sc = s.screens[n - 1];
	return sc.state === 'playing' && sc.segments >= 2 && sc.time > 0.5 && /^[0-9a-f-]{36}$/.test(sc.id);
};

// wholePlayback plays /hls/short.m3u8 (48 s) on one screen as a user of
// its own, and samples the user's stream count every second from the
// limiter (GET /streams) until the slot is free again. It returns what it
// saw: the count while playing, when the video ended, when the slot went.
async function wholePlayback() {
	const who = `${user}-whole`;
	const p = await context.newPage();
	p.on('pageerror', (err) => problems.push(`whole playback page error: ${err.message}`));
	await p.goto(`${base}/?user=${encodeURIComponent(who)}&screens=1&src=/hls/short.m3u8`);
	const count = async () => {
		const r = await context.request.get(`${base}/streams`, { headers: { 'X-User-Id': who } });
		return ((await r.json()).streams || []).length;
	};
	const seen = { whilePlaying: new Set(), samples: 0, ended: 0, freed: 0, position: 0 };
	const deadline = Date.now() + 48000 + lease + 20000;
	while (Date.now() < deadline) {
		const v = await p.evaluate(() => {
			const video = document.querySelector('video');
			return { time: video.currentTime, ended: video.ended };
		});
		const n = await count();
		if (v.time > 0.5 && !v.ended) {
			seen.whilePlaying.add(n);
			seen.samples++;
			seen.position = v.time;
		}
		if (v.ended && !seen.ended) seen.ended = Date.now();
		if (seen.ended && n === 0) {
			seen.freed = Date.now();
			break;
		}
		await new Promise((r) => setTimeout(r, 1000));
	}
	await p.close();
	return seen;
}

let whole;
try {
	whole = wholePlayback();
	page = await context.newPage();
	page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
	page.on('request', (req) => {
		if (req.url().endsWith('.ts')) segmentURLs.push(req.url());
	});

	step(`open ${base}/ as ${user}`);
	const resp = await page.goto(`${base}/?user=${user}`);
	assert.equal(resp.status(), 200, 'the demo page loads');

	step('screens 1-3 play: segments loaded and video time moving');
	let s = await waitUntil('screens 1, 2 and 3 play', (st) => [1, 2, 3].every((n) => playing(st, n)));

	step('screen 4 shows the refusal from the 429 body');
	s = await waitUntil('screen 4 is refused', (st) => st.screens[3].state === 'refused');
	const refusal = s.screens[3].overlay;
	assert.match(refusal, /Limit reached/, 'the refusal title');
	assert.match(refusal, /already watching 3 of 3 streams/, 'active and limit from the 429 body');
	assert.match(refusal, /429 stream_limit_exceeded/, 'the status and error from the 429 body');
	assert.match(refusal, /\(Chrome on Linux since [^;]+; Chrome on Linux since [^;]+; Chrome on Linux since [^)]+\)/, 'the three screens the 429 body names');
	assert.equal(s.screens[3].segments, 0, 'the refused screen loaded no segment');

	step('the panel lists exactly the three playing streams');
	s = await waitUntil('the panel lists three streams', (st) => st.listed.length === 3);
	assert.deepEqual(new Set(s.listed), new Set(s.screens.slice(0, 3).map((sc) => sc.id)));
	assert.equal(new Set(s.listed).size, 3, 'three distinct stream ids');
	await page.screenshot({ path: path.join(shots, 'demo-limit.png'), fullPage: true });

	step('close screen 2');
	const closedID = s.screens[1].id;
	await page.locator('.screen[data-screen="2"] .action').click();
	s = await waitUntil('screen 2 is closed with 204', (st) => st.screens[1].state === 'closed' && st.screens[1].overlay.includes('→ 204'));

	step('screen 4 starts in the freed slot');
	s = await waitUntil('screen 4 plays', (st) => playing(st, 4));
	s = await waitUntil('the panel lists screens 1, 3 and 4', (st) =>
		st.listed.length === 3 && [1, 3, 4].every((n) => st.listed.includes(st.screens[n - 1].id)));
	assert.ok(!s.listed.includes(closedID), 'the closed stream is gone from the list');
	for (const n of [1, 3]) assert.ok(playing(s, n), `screen ${n} still plays`);
	await page.screenshot({ path: path.join(shots, 'demo-after-close.png'), fullPage: true });

	step('the streams outlive their lease while they play');
	const firstStart = Date.now() - (await page.evaluate(() => performance.now()));
	await new Promise((r) => setTimeout(r, Math.max(0, firstStart + lease + 5000 - Date.now())));
	s = await state();
	const live = [1, 3, 4].map((n) => s.screens[n - 1].id);
	assert.deepEqual(new Set(s.listed), new Set(live), 'the panel still lists screens 1, 3 and 4 after the lease');
	for (const n of [1, 3, 4]) assert.ok(playing(s, n), `screen ${n} still plays`);
	assert.equal(s.screens[1].state, 'closed', 'screen 2 stays closed');

	step('a kicked stream shows as revoked');
	const kick = await context.request.delete(`${admin}/stream_limit/zones/default/users/${encodeURIComponent(user)}/streams/${live[0]}`);
	assert.equal(kick.status(), 204, 'the admin API kicks screen 1');
	const kicked = Date.now();
	s = await waitUntil('screen 1 is revoked', (st) => st.screens[0].state === 'revoked', 10000);
	console.log(`  revoked after ${Date.now() - kicked} ms`);

	step('every segment the players fetched carried a stream token');
	assert.ok(segmentURLs.length >= 8, `segments fetched: ${segmentURLs.length}`);
	const untokenized = segmentURLs.filter((u) => !/\/~sl-[0-9a-f-]{36}\.d[\w-]{12}\.\d+\//.test(u));
	assert.deepEqual(untokenized, [], 'segment URLs without a token');

	step('a 48 s playback counted once from start to end, freed within the lease after it');
	const w = await whole;
	console.log(`  ${w.samples} samples while playing, counts ${[...w.whilePlaying]}; freed ${((w.freed - w.ended) / 1000).toFixed(1)} s after the end`);
	assert.ok(w.ended, `the video ended (reached ${w.position.toFixed(1)} s)`);
	assert.ok(w.samples >= 35, `sampled through the playback: ${w.samples}`);
	assert.deepEqual([...w.whilePlaying], [1], 'the count while it played');
	assert.ok(w.freed && w.freed - w.ended <= lease + 3000, 'the slot freed within the lease after the end');

	assert.deepEqual(problems, [], 'errors on the page');
	console.log(`ok: 3 played, the 4th was refused, then started after a close; ${segmentURLs.length} segments; screenshots in ${shots}`);
} catch (err) {
	if (page) await page.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
	console.error(err.stack || String(err));
	if (problems.length) console.error(problems.join('\n'));
	process.exitCode = 1;
} finally {
	// context.close() alone fires no pagehide: the page's streams would hold
	// their slots for a lease.
	if (page) await page.close({ runBeforeUnload: true }).catch(() => {});
	await context.close();
	fs.rmSync(profile, { recursive: true, force: true });
}
