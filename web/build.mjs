// Bundles the browser console (dist/console.js, dist/console.css) and the
// fleet dashboard (dist/dashboard.js, dist/dashboard.css), which
// web/embed.go embeds into otherix-api. `npm run build` runs this;
// `make build` runs it before go build.
import * as esbuild from "esbuild";

const options = {
	entryPoints: { console: "src/console.js", dashboard: "src/dashboard.js" },
	bundle: true,
	format: "esm",
	target: ["es2020"],
	minify: true,
	sourcemap: false,
	legalComments: "eof",
	outdir: "dist",
	logLevel: "info",
};

if (process.argv.includes("--watch")) {
	const ctx = await esbuild.context(options);
	await ctx.watch();
} else {
	await esbuild.build(options);
}
