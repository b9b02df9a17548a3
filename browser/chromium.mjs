// The flags the browser tests launch Debian's Chromium with: off the
// network it would otherwise call home to, which this closed machine
// refuses, and away from the GPU it lacks.
export const chromiumArgs = [
	'--no-sandbox',
	'--disable-gpu',
	'--disable-quic',
	'--no-first-run',
	'--disable-background-networking',
	'--disable-component-update',
	'--disable-sync',
];
