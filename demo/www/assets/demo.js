// The demo page: four stock hls.js players for one user in front of
// stream_limit, and a panel of that user's live streams read from the
// limiter's list_path. The players know nothing of stream ids: the limiter
// redirects each to a URL carrying its token, and every segment URL the
// player resolves from there carries it too. The page only sends the user
// header (an auth layer would, in production) and reads the 429 body.
'use strict';

const params = new URLSearchParams(location.search);
const user = params.get('user') || 'alice';
// ?src= picks another stream of this site (/dash/… is not HLS); never
// another site, which would get the user header and the DELETEs.
const wanted = new URL(params.get('src') || '/hls/loop.m3u8', location.href);
const source = wanted.origin === location.origin ? wanted.href : new URL('/hls/loop.m3u8', location.href).href;
const listPath = '/streams';
// ?screens= shows fewer screens (1 to 4).
const screenCount = Math.min(Math.max(Number.parseInt(params.get('screens') || '4', 10) || 4, 1), 4);
const leaseSeconds = 30; // the demo Caddyfile's lease, for the panel's bars

let limit = 3;
const screens = [];

function withUser(headers = {}) {
	return { 'X-User-Id': user, ...headers };
}

const labels = {
	idle: 'Idle',
	starting: 'Starting',
	playing: 'Playing',
	refused: 'Refused',
	revoked: 'Revoked',
	closed: 'Closed',
	error: 'Error',
};

// The body of a refusal: JSON such as
// {"error":"stream_limit_exceeded","limit":3,"active":3}.
function refusalBody(xhr) {
	if (!xhr) return {};
	try {
		const text = xhr.responseType === 'arraybuffer'
			? new TextDecoder().decode(xhr.response)
			: xhr.responseText;
		return JSON.parse(text) || {};
	} catch {
		return {};
	}
}

class Screen {
	constructor(n) {
		const el = document.getElementById('screen-template').content.firstElementChild.cloneNode(true);
		this.n = n;
		this.el = el;
		this.video = el.querySelector('video');
		this.badge = el.querySelector('.badge');
		this.title = el.querySelector('.overlay-title');
		this.text = el.querySelector('.overlay-text');
		this.detail = el.querySelector('.overlay-detail');
		this.segmentCount = el.querySelector('.segments');
		this.sid = el.querySelector('.sid');
		el.dataset.screen = String(n);
		const name = el.querySelector('.screen-name');
		name.textContent = `Screen ${n}`;
		name.id = `screen-${n}-name`;
		el.setAttribute('aria-labelledby', name.id);
		this.button = el.querySelector('.action');
		this.button.setAttribute('aria-describedby', name.id);
		this.button.addEventListener('click', () => (this.state === 'playing' ? this.close() : this.start()));
		this.hls = null;
		this.id = '';
		this.url = '';
		this.segments = 0;
		this.retryTimer = 0;
		this.gen = 0; // bumped by every start and close: stale callbacks check it
		this.started = Promise.resolve();
		this.show('idle', { title: 'Idle', text: 'Not started.' });
	}

	show(state, { title = '', text = '', detail = '' } = {}) {
		this.state = state;
		this.el.dataset.state = state;
		this.el.dataset.streamId = this.id;
		this.badge.textContent = labels[state];
		this.title.textContent = title;
		this.text.textContent = text;
		this.detail.textContent = detail;
		this.sid.textContent = this.id ? ` · stream ${this.id.slice(0, 8)}` : '';
		const button = {
			playing: ['Close stream', 'danger', false],
			starting: ['Starting…', '', true],
			refused: ['Try again', 'primary', false],
		}[state] || ['Start', 'primary', false];
		[this.button.textContent, this.button.className, this.button.disabled] = button;
		this.button.classList.add('action');
	}

	countSegment() {
		this.segments++;
		this.segmentCount.textContent = String(this.segments);
		this.el.dataset.segments = String(this.segments);
	}

	// start plays the demo stream from scratch: a start request, which the
	// limiter admits (and redirects to the stream's token) or refuses.
	start() {
		if (this.state === 'starting') return this.started;
		this.teardown();
		this.gen++;
		this.id = '';
		this.url = '';
		this.segments = 0;
		this.segmentCount.textContent = '0';
		delete this.el.dataset.segments;
		this.show('starting', { title: 'Starting', text: 'Asking the limiter for a slot…' });
		this.started = new Promise((resolve) => {
			// Stock hls.js: only the user header is added (in production an
			// auth layer sets the identity). No buffer or retry settings: the
			// limiter counts what stock players do.
			const hls = new Hls({
				xhrSetup: (xhr, url) => {
					xhr.open('GET', url, true);
					xhr.setRequestHeader('X-User-Id', user);
					// Four screens in one browser: each names itself (the
					// limiter's client option), as four devices would differ.
					xhr.setRequestHeader('X-Screen', String(this.n));
				},
			});
			this.hls = hls;
			hls.on(Hls.Events.MANIFEST_LOADED, (_, data) => {
				const xhr = data.networkDetails;
				this.url = (xhr && xhr.responseURL) || data.url;
				this.id = (xhr && xhr.getResponseHeader('Stream-Id')) || '';
				this.startedAt = performance.now();
				this.show('playing');
				this.video.play().catch(() => {});
				resolve();
				panel.refresh();
			});
			hls.on(Hls.Events.FRAG_LOADED, () => this.countSegment());
			hls.on(Hls.Events.ERROR, (_, data) => {
				// hls.js retries a failed segment of a one-rendition stream 6
				// times over ~31 s, 4xx included, before it gives up: a revoked
				// stream (409) never comes back, and a lapsed one refused at the
				// limit (429) is the page's to retry, so both end playback now.
				const code = data.response && data.response.code;
				const refused = data.details === Hls.ErrorDetails.FRAG_LOAD_ERROR && (code === 409 || code === 429);
				if (!data.fatal && !refused) return;
				this.failed(data);
				resolve();
			});
			hls.attachMedia(this.video);
			hls.loadSource(source);
		});
		return this.started;
	}

	failed(data) {
		const xhr = data.networkDetails;
		const status = (data.response && data.response.code) || (xhr && xhr.status) || 0;
		const body = refusalBody(xhr);
		this.teardown();
		this.id = '';
		this.url = '';
		if (status === 429) {
			const retryAfter = Math.min(Math.max(Number.parseInt((xhr && xhr.getResponseHeader('Retry-After')) || '', 10) || 5, 1), 60);
			// The refusal names the screens that hold the slots.
			const screens = (body.screens || [])
				.map((sc) => `${sc.client || 'a screen'} since ${new Date(sc.started).toLocaleTimeString()}`)
				.join('; ');
			// stream_shared: this player plays a stream another screen
			// plays too (its URL was passed on), and no slot is free for it.
			const shared = body.error === 'stream_shared';
			this.show('refused', {
				title: shared ? 'Shared stream' : 'Limit reached',
				text: shared
					? `This stream is already playing on another screen, and ${user} has no stream of ${body.limit ?? '?'} free for this one${screens ? ` (${screens})` : ''}. Close one and this screen starts.`
					: `${user} is already watching ${body.active ?? '?'} of ${body.limit ?? '?'} streams${screens ? ` (${screens})` : ''}. Close one and this screen starts.`,
				detail: `429 ${body.error || ''} · Retry-After ${retryAfter} s`,
			});
			// The panel starts a waiting screen as soon as a slot is free;
			// this is the fallback the server asked for.
			this.retryTimer = setTimeout(() => this.state === 'refused' && this.start(), retryAfter * 1000);
		} else if (status === 409 && body.error === 'stream_replaced') {
			// The same device opened this title again (a reload, another
			// tab): that player plays it now, and this one stops.
			const by = (body.screens || [])[0];
			this.show('revoked', {
				title: 'Playing elsewhere',
				text: `This title was opened again on this device${by ? ` (${by.client || 'a screen'}, at ${new Date(by.started).toLocaleTimeString()})` : ''}; it plays there now.`,
				detail: `409 ${body.error}`,
			});
		} else if (status === 409) {
			this.show('revoked', {
				title: 'Stream ended',
				text: 'This stream was closed from elsewhere: kicked by an operator, evicted by a newer stream, or closed in another tab.',
				detail: `409 ${body.error || ''}`,
			});
		} else {
			this.show('error', {
				title: 'Playback failed',
				text: data.details || 'The stream could not be played.',
				detail: status ? `HTTP ${status}` : '',
			});
		}
		panel.refresh();
	}

	// close ends the stream: DELETE on the URL it plays frees its slot.
	async close() {
		const url = this.url;
		const id = this.id;
		const gen = ++this.gen;
		this.teardown();
		this.show('closed', { title: 'Closed', text: 'Stream closed; its slot is free.', detail: 'DELETE …' });
		let detail = '';
		try {
			const resp = await fetch(url, { method: 'DELETE', headers: withUser(id ? { 'Stream-Id': id } : {}) });
			detail = `DELETE ${new URL(url).pathname} → ${resp.status}`;
		} catch (err) {
			detail = `DELETE failed: ${err.message}`;
		}
		if (gen !== this.gen) return; // started again meanwhile: that stream's state stands
		this.id = '';
		this.show('closed', { title: 'Closed', text: 'Stream closed; its slot is free.', detail });
		await panel.refresh();
	}

	teardown() {
		clearTimeout(this.retryTimer);
		if (this.hls) {
			this.hls.destroy();
			this.hls = null;
		}
		this.video.removeAttribute('src');
		this.video.load();
	}
}

function ago(ms) {
	const s = Math.max(0, Math.round(ms / 1000));
	return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// endGone ends the screens whose stream the limiter no longer holds
// (listed is what a list asked for at asked returned): a stock player
// plays on from its buffer, minutes of it, before its next request would
// meet the 409 of a kicked or closed stream, so the page shows it now.
function endGone(listed, asked) {
	for (const s of screens) {
		if (s.state === 'playing' && s.id && s.startedAt < asked && !listed.has(s.id)) {
			s.teardown();
			s.id = '';
			s.url = '';
			s.show('revoked', {
				title: 'Stream ended',
				text: 'This stream was closed from elsewhere: kicked by an operator, evicted by a newer stream, or closed in another tab.',
				detail: `gone from GET ${listPath}`,
			});
		}
	}
}

// The panel lists the user's live streams as the limiter counts them,
// including streams of this user elsewhere (another tab, ffmpeg).
const panel = {
	busy: false,
	again: false,

	async refresh() {
		if (this.busy) {
			this.again = true;
			return;
		}
		this.busy = true;
		try {
			const asked = performance.now();
			const resp = await fetch(listPath, { headers: withUser(), cache: 'no-store' });
			if (!resp.ok) throw new Error(`GET ${listPath} answered ${resp.status}`);
			const body = await resp.json();
			const serverNow = Date.parse(resp.headers.get('Date')) || Date.now();
			limit = body.limit;
			this.render(body.streams || [], serverNow);
			endGone(new Set((body.streams || []).map((s) => s.id)), asked);
			document.getElementById('panel-error').hidden = true;
			if ((body.streams || []).length < limit) startWaiting();
		} catch (err) {
			const e = document.getElementById('panel-error');
			e.textContent = err.message;
			e.hidden = false;
		} finally {
			this.busy = false;
		}
		if (this.again) {
			this.again = false;
			await this.refresh();
		}
	},

	render(streams, serverNow) {
		document.getElementById('limit').textContent = String(limit);
		const slots = document.getElementById('slots');
		const summary = `${streams.length} of ${limit} slots used`;
		if (slots.dataset.summary !== summary) {
			// Rebuilt only when it changes: it is a live region.
			slots.dataset.summary = summary;
			slots.replaceChildren();
			for (let i = 0; i < limit; i++) {
				const pip = document.createElement('span');
				pip.className = i < streams.length ? 'pip used' : 'pip';
				slots.append(pip);
			}
			const count = document.createElement('span');
			count.className = 'count';
			count.textContent = summary;
			slots.append(count);
		}
		slots.classList.toggle('full', streams.length >= limit);

		// Rows are kept by stream id and updated in place, so that a Close
		// button keeps focus and a press on it survives the next refresh.
		const list = document.getElementById('streams');
		const old = new Map([...list.children].map((li) => [li.dataset.streamId, li]));
		const rows = streams.map((s) => this.row(old.get(s.id), s, serverNow));
		for (const li of old.values()) if (!rows.includes(li)) li.remove();
		// Moving (or replacing) a row that holds focus would blur it: only
		// rows out of place are moved.
		rows.forEach((li, i) => { if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null); });
		list.dataset.count = String(streams.length);
		document.getElementById('empty').hidden = streams.length > 0;
	},

	row(li, stream, serverNow) {
		if (!li) {
			li = document.createElement('li');
			li.dataset.streamId = stream.id;
			li.innerHTML = '<div><span class="who"></span> <span class="id"></span></div>'
				+ '<button type="button" class="danger">Close</button>'
				+ '<div class="lease"><span></span></div><span class="times"></span>';
			li.querySelector('.id').textContent = `${stream.id.slice(0, 13)}…`;
			li.querySelector('.id').title = stream.id;
			li.querySelector('button').addEventListener('click', () => {
				const screen = screens.find((sc) => sc.id === stream.id);
				return screen ? screen.close() : closeElsewhere(stream.id);
			});
		}
		const screen = screens.find((sc) => sc.id && sc.id === stream.id);
		const who = li.querySelector('.who');
		who.className = screen ? 'who' : 'who elsewhere';
		who.textContent = screen ? `Screen ${screen.n}` : 'Elsewhere';
		li.querySelector('button').setAttribute('aria-label', `Close the stream of ${who.textContent.toLowerCase()}`);
		const left = Date.parse(stream.expires) - serverNow;
		li.querySelector('.lease span').style.width = `${Math.max(0, Math.min(100, (left / (leaseSeconds * 1000)) * 100))}%`;
		li.querySelector('.times').textContent = `started ${ago(serverNow - Date.parse(stream.started))} ago · lease ends in ${ago(Math.min(left, leaseSeconds * 1000))} unless renewed`;
		return li;
	},
};

// closeElsewhere closes a stream this page does not play: DELETE with its
// id in the Stream-Id header, on any path the limiter guards.
async function closeElsewhere(id) {
	try {
		await fetch(source, { method: 'DELETE', headers: withUser({ 'Stream-Id': id }) });
	} catch {
		// The panel's next refresh shows whether it is gone.
	}
	await panel.refresh();
}

// startWaiting starts the first refused screen when a slot is free.
function startWaiting() {
	if (screens.some((s) => s.state === 'starting')) return;
	const waiting = screens.find((s) => s.state === 'refused');
	if (waiting) waiting.start();
}

async function main() {
	document.getElementById('user').textContent = user;
	const sq = (v) => `'${v.replaceAll("'", "'\\''")}'`; // POSIX shell single quotes
	document.getElementById('ffmpeg-cmd').textContent =
		`ffmpeg -re -headers ${sq(`X-User-Id: ${user}`)}$'\\r\\n' \\\n  -i ${sq(source)} -c copy -f null -`;
	const root = document.getElementById('screens');
	for (let n = 1; n <= screenCount; n++) {
		const screen = new Screen(n);
		screens.push(screen);
		root.append(screen.el);
	}
	if (typeof Hls === 'undefined' || !Hls.isSupported()) {
		for (const s of screens) s.show('error', { title: 'No player', text: 'This browser cannot play HLS with hls.js (no Media Source Extensions).' });
		return;
	}
	// Leaving the page closes its streams at once rather than after the lease.
	addEventListener('pagehide', () => {
		for (const s of screens) {
			if (s.state === 'playing' && s.url) {
				fetch(s.url, { method: 'DELETE', headers: withUser(s.id ? { 'Stream-Id': s.id } : {}), keepalive: true });
			}
		}
	});
	await panel.refresh();
	// One after another, so that the fourth is the one refused.
	for (const s of screens) await s.start();
	setInterval(() => panel.refresh(), 1000);
}

main();
