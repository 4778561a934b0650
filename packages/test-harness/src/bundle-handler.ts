// One way to bundle a Lambda handler, shared by the examples' bundle tests, the demo, the soak, the fleet run and
// the cold-start benchmark: the same settings as the examples' SAM templates and their `build` scripts (esbuild,
// ESM, Node 24 target, minified, a source map next to the bundle), so what runs here is what gets deployed. Run
// with --enable-source-maps (the templates set it in NODE_OPTIONS), a stack trace names handler.ts and the
// packages' sources instead of handler.mjs:1:26622.
//
// Everything is bundled, mysql2 and undici included: the Lambda Node runtime ships neither as an importable
// module (it has the AWS SDK v3 and nothing else), so a function that leaves them external fails at import.
import { dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";
import { workspaceSourceUrl } from "./workspace-sources.ts";

export interface BundleOptions {
	/** The handler's source, e.g. examples/orders-api/handler.ts. */
	entry: string;
	/** Where the bundle goes, e.g. examples/orders-api/dist/handler.mjs (and its source map, handler.mjs.map). */
	outfile: string;
	/** Default true, as in the SAM templates. */
	minify?: boolean;
}

export interface Bundle {
	outfile: string;
	/** The source map next to it, which Node reads only with --enable-source-maps. */
	sourcemap: string;
	/** Size of the bundle on disk (the module Lambda loads; its source map not counted). */
	bytes: number;
	/** Bytes each npm package (or "(workspace)" for this repo's packages and the example itself) contributes. */
	bytesByPackage: Record<string, number>;
}

/**
 * mysql2 is CommonJS and calls `require("net")`, `require("crypto")`, ...: in an ES module bundle, esbuild's
 * `require` shim needs a real `require`, which this banner provides (the SAM templates carry the same banner).
 */
export const COMMONJS_BANNER =
	'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);';

/**
 * In this repository the examples depend on `@middy-conn/*` as `workspace:^`, whose `exports` point at a `dist/`
 * that a fresh clone has not built. esbuild reads TypeScript, so it takes the packages' source instead: the same
 * code that `pnpm pack` compiles to dist. (A copy of an example outside the repository resolves the published
 * packages from npm and needs none of this.)
 */
const workspaceSources: Plugin = {
	name: "middy-conn-workspace-sources",
	setup(pluginBuild) {
		pluginBuild.onResolve({ filter: /^@middy-conn\/(lifecycle|http-pool|mysql)(\/[a-z-]+)?$/ }, (args) => {
			const source = workspaceSourceUrl(args.path);
			return source ? { path: fileURLToPath(source) } : undefined;
		});
	},
};

const packageOf = (input: string): string => {
	const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*node_modules\/)/.exec(input);
	return match?.[1] ?? "(workspace)";
};

export const bundleHandler = async (options: BundleOptions): Promise<Bundle> => {
	const result = await build({
		entryPoints: [options.entry],
		outfile: options.outfile,
		bundle: true,
		platform: "node",
		target: "node24",
		format: "esm",
		minify: options.minify ?? true,
		// A separate .map file named by a comment in the bundle, as the templates' `Sourcemap: true` writes it.
		sourcemap: "linked",
		legalComments: "none",
		banner: { js: COMMONJS_BANNER },
		// Resolve dependencies from the example's own folder, as `sam build` does.
		absWorkingDir: dirname(options.entry),
		plugins: [workspaceSources],
		metafile: true,
		logLevel: "silent",
	});
	const bytesByPackage: Record<string, number> = {};
	let bytes = 0;
	for (const [path, output] of Object.entries(result.metafile.outputs)) {
		if (path.endsWith(".map")) continue;
		bytes += output.bytes;
		for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
			const name = packageOf(input);
			bytesByPackage[name] = (bytesByPackage[name] ?? 0) + bytesInOutput;
		}
	}
	return { outfile: options.outfile, sourcemap: `${options.outfile}.map`, bytes, bytesByPackage };
};

/** "412.3 kB" */
export const formatBytes = (bytes: number): string =>
	bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${(bytes / 1024).toFixed(1)} kB`;

/** A one-line description of a bundle: its size and its three largest contributors. */
export const describeBundle = (bundle: Bundle): string => {
	const largest = Object.entries(bundle.bytesByPackage)
		.sort(([, a], [, b]) => b - a)
		.slice(0, 3)
		.map(([name, size]) => `${name} ${formatBytes(size)}`)
		.join(", ");
	const path = relative(process.cwd(), bundle.outfile);
	return `${path.startsWith("..") ? bundle.outfile : path}: ${formatBytes(bundle.bytes)} (${largest})`;
};
