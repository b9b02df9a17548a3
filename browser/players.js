// Starts one stock player for players.html. Each player is built with its
// default configuration: the one thing set is the X-User-Id header on every
// request, through the hook each player documents for it. Nothing here knows
// of stream ids: the limiter's redirect and rewritten manifests carry them.
'use strict';

const params = new URLSearchParams(location.search);
const user = params.get('user');
const src = params.get('src');
const video = document.querySelector('video');

// matrix is what players.test.mjs reads: errors the player reported (fatal
// ones end the playback) and a destroy that stops the player as a site
// does when its viewer leaves the video.
const matrix = (window.matrix = { errors: [], fatal: null, destroy: null });

function report(fatal, what) {
	matrix.errors.push(`${fatal ? 'fatal' : 'recoverable'}: ${what}`);
	if (fatal && !matrix.fatal) matrix.fatal = what;
}

const players = {
	'hls.js': {
		// The full build: the light one plays no alternate audio rendition.
		script: 'node_modules/hls.js/dist/hls.min.js',
		start() {
			const hls = new Hls({ xhrSetup: (xhr) => xhr.setRequestHeader('X-User-Id', user) });
			hls.on(Hls.Events.ERROR, (_, data) => {
				report(data.fatal, `${data.type} ${data.details}${data.response ? ` (HTTP ${data.response.code})` : ''}`);
			});
			hls.loadSource(src);
			hls.attachMedia(video);
			return () => hls.destroy();
		},
	},
	'dash.js': {
		script: 'node_modules/dashjs/dist/modern/umd/dash.all.min.js',
		start() {
			const player = dashjs.MediaPlayer().create();
			player.addRequestInterceptor((request) => {
				request.headers = { ...request.headers, 'X-User-Id': user };
				return Promise.resolve(request);
			});
			// dash.js reports every error it gives up on through this event.
			player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
				report(true, `error ${e.error?.code} ${e.error?.message ?? ''}`);
			});
			player.initialize(video, src, true);
			return () => player.destroy();
		},
	},
	shaka: {
		// The compiled build plays HLS and DASH.
		script: 'node_modules/shaka-player/dist/shaka-player.compiled.js',
		start() {
			shaka.polyfill.installAll();
			const player = new shaka.Player();
			player.addEventListener('error', (e) => {
				report(e.detail.severity === shaka.util.Error.Severity.CRITICAL, shakaError(e.detail));
			});
			player.getNetworkingEngine().registerRequestFilter((_, request) => {
				request.headers['X-User-Id'] = user;
			});
			player
				.attach(video)
				.then(() => player.load(src))
				.catch((err) => report(true, `load: ${shakaError(err)}`));
			return () => player.destroy();
		},
	},
};

function shakaError(err) {
	// A bad HTTP status (1001) names the URI and the status in its data.
	return `shaka error ${err.code}${err.code === 1001 ? ` (HTTP ${err.data[1]})` : ''}`;
}

const chosen = players[params.get('player')];
const script = document.createElement('script');
script.src = chosen.script;
script.onload = () => {
	matrix.destroy = chosen.start();
};
script.onerror = () => report(true, `cannot load ${chosen.script}`);
document.head.append(script);
