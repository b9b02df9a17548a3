// The demo page: four stock hls.js players for one user in front of
// stream_limit, and a panel of that user's live streams read from the
// limiter's list_path. The players know nothing of stream ids: the limiter
// redirects each to a URL carrying its token, and every segment URL the
// player resolves from there carries it too. The page only sends the user
// header (an auth layer would, in production) and reads the 429 body.
'use strict';

const params = new URLSearchParams(location.search);
const user = params.get('user') || 'alice';
const source = new URL(params.get('src') || '/hls/loop.m3u8', location.href).href;
const listPath = '/streams';
const screenCount = 4;
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
	revoked: 'Closed elsewhere',
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
		this.button = el.querySelector('.action');
		el.dataset.screen = String(n);
		el.querySelector('.screen-name').textContent = `Screen ${n}`;
		this.button.addEventListener('click', () => (this.state === 'playing' ? this.close() : this.start()));
		this.hls = null;
		this.id = '';
		this.url = '';
		this.segments = 0;
		this.retryTimer = 0;
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
		this.id = '';
		this.url = '';
		this.show('starting', { title: 'Starting', text: 'Asking the limiter for a slot…' });
		this.started = new Promise((resolve) => {
			const hls = new Hls({
				xhrSetup(xhr, url) {
					xhr.open('GET', url, true);
					xhr.setRequestHeader('X-User-Id', user);
				},
				maxBufferLength: 8,
				maxMaxBufferLength: 12,
				backBufferLength: 8,
				// A refusal is an answer, not a fault to retry.
				manifestLoadPolicy: {
					default: { maxTimeToFirstByteMs: 10000, maxLoadTimeMs: 20000, timeoutRetry: null, errorRetry: null },
				},
			});
			this.hls = hls;
			hls.on(Hls.Events.MANIFEST_LOADED, (_, data) => {
				const xhr = data.networkDetails;
				this.url = (xhr && xhr.responseURL) || data.url;
				this.id = (xhr && xhr.getResponseHeader('Stream-Id')) || '';
				this.show('playing');
				this.video.play().catch(() => {});
				resolve();
				panel.refresh();
			});
			hls.on(Hls.Events.FRAG_LOADED, () => this.countSegment());
			hls.on(Hls.Events.ERROR, (_, data) => {
				if (!data.fatal) return;
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
		if (status === 429) {
			const retryAfter = Number((xhr && xhr.getResponseHeader('Retry-After')) || 5);
			this.show('refused', {
				title: 'Limit reached',
				text: `${user} is already watching ${body.active ?? '?'} of ${body.limit ?? '?'} streams. Close one and this screen starts.`,
				detail: `429 ${body.error || ''} · Retry-After ${retryAfter} s`,
			});
			// The panel starts a waiting screen as soon as a slot is free;
			// this is the fallback the server asked for.
			this.retryTimer = setTimeout(() => this.state === 'refused' && this.start(), retryAfter * 1000);
		} else if (status === 409) {
			this.show('revoked', {
				title: 'Stream closed',
				text: 'An operator kicked this stream, or a newer one evicted it.',
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
		this.teardown();
		this.show('closed', { title: 'Closed', text: 'Stream closed; its slot is free.', detail: 'DELETE …' });
		let detail = '';
		try {
			const resp = await fetch(url, { method: 'DELETE', headers: withUser() });
			detail = `DELETE ${new URL(url).pathname} → ${resp.status}`;
		} catch (err) {
			detail = `DELETE failed: ${err.message}`;
		}
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
			const resp = await fetch(listPath, { headers: withUser(), cache: 'no-store' });
			if (!resp.ok) throw new Error(`GET ${listPath} answered ${resp.status}`);
			const body = await resp.json();
			const serverNow = Date.parse(resp.headers.get('Date')) || Date.now();
			limit = body.limit;
			this.render(body.streams || [], serverNow);
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
		slots.replaceChildren();
		for (let i = 0; i < limit; i++) {
			const pip = document.createElement('span');
			pip.className = i < streams.length ? 'pip used' : 'pip';
			slots.append(pip);
		}
		const count = document.createElement('span');
		count.className = 'count';
		count.textContent = `${streams.length} of ${limit} slots used`;
		slots.append(count);
		slots.classList.toggle('full', streams.length >= limit);

		const list = document.getElementById('streams');
		list.replaceChildren(...streams.map((s) => this.row(s, serverNow)));
		list.dataset.count = String(streams.length);
		document.getElementById('empty').hidden = streams.length > 0;
	},

	row(stream, serverNow) {
		const screen = screens.find((sc) => sc.id && sc.id === stream.id);
		const li = document.createElement('li');
		li.dataset.streamId = stream.id;
		const who = document.createElement('span');
		who.className = screen ? 'who' : 'who elsewhere';
		who.textContent = screen ? `Screen ${screen.n}` : 'Elsewhere';
		const id = document.createElement('span');
		id.className = 'id';
		id.textContent = `${stream.id.slice(0, 13)}…`;
		id.title = stream.id;
		const close = document.createElement('button');
		close.type = 'button';
		close.className = 'danger';
		close.textContent = 'Close';
		close.addEventListener('click', () => (screen ? screen.close() : closeElsewhere(stream.id)));
		const left = Date.parse(stream.expires) - serverNow;
		const bar = document.createElement('div');
		bar.className = 'lease';
		const fill = document.createElement('span');
		fill.style.width = `${Math.max(0, Math.min(100, (left / (leaseSeconds * 1000)) * 100))}%`;
		bar.append(fill);
		const times = document.createElement('span');
		times.className = 'times';
		times.textContent = `started ${ago(serverNow - Date.parse(stream.started))} ago · lease ends in ${ago(left)} unless renewed`;
		const head = document.createElement('div');
		head.append(who, ' ', id);
		li.append(head, close, bar, times);
		return li;
	},
};

// closeElsewhere closes a stream this page does not play: DELETE with its
// id in the Stream-Id header, on any path the limiter guards.
async function closeElsewhere(id) {
	await fetch(source, { method: 'DELETE', headers: withUser({ 'Stream-Id': id }) });
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
	document.getElementById('ffmpeg-cmd').textContent =
		`ffmpeg -re -headers 'X-User-Id: ${user}'$'\\r\\n' \\\n  -i ${source} -c copy -f null -`;
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
				fetch(s.url, { method: 'DELETE', headers: withUser(), keepalive: true });
			}
		}
	});
	await panel.refresh();
	// One after another, so that the fourth is the one refused.
	for (const s of screens) await s.start();
	setInterval(() => panel.refresh(), 1000);
}

main();
