// Cold start: a fresh Node process that loads a deployed-style bundle and runs its module scope, timed from
// spawn until the child says it is ready (the part of a Lambda init that the code controls, plus Node's boot).
// Each variant is an esbuild bundle made here, like the ones SAM/CDK build; the variants are spawned
// interleaved, one after the other, so that none runs on a busier machine than another.
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { spawnTracked } from "./cleanup.ts";
import { type ComparisonResult, type Contender, runComparison } from "./runner.ts";
import { coldStartRounds, type Mode } from "./settings.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const workDir = `${root}.tmp/bench/cold-start`;
const exampleHandler = `${root}examples/orders-api/handler.ts`;
const fallbackHandler = fileURLToPath(new URL("./cold-start-handler.ts", import.meta.url));

export const NAMES = {
	node: "node, empty module",
	bareUnbundled: "import undici + mysql2 (node_modules)",
	bare: "import undici + mysql2 (bundled)",
	handler: "bundled handler, both middlewares",
} as const;

export interface ColdStartResult {
	comparison: ComparisonResult;
	/** Which handler was bundled (the example's, or the benchmark's fallback). */
	subject: string;
	/** Bundle sizes in bytes, by variant name. */
	sizes: Record<string, number>;
	/** Variants left out, with the reason. */
	problems: string[];
}

const READY = 'process.stdout.write("ready\\n");';

/** The entry of each variant, as source text; it must end by printing the ready line. */
const entries = (subject: string): Record<string, { source: string; bundle: boolean }> => ({
	[NAMES.node]: { source: READY, bundle: false },
	[NAMES.bareUnbundled]: {
		source: `import { Pool } from "undici";\nimport mysql from "mysql2/promise";\nif (typeof Pool !== "function" || typeof mysql.createPool !== "function") throw new Error("missing");\n${READY}`,
		bundle: false,
	},
	[NAMES.bare]: {
		source: `import { Pool } from "undici";\nimport mysql from "mysql2/promise";\nif (typeof Pool !== "function" || typeof mysql.createPool !== "function") throw new Error("missing");\n${READY}`,
		bundle: true,
	},
	[NAMES.handler]: {
		source: `import { handler } from ${JSON.stringify(subject)};\nif (typeof handler !== "function") throw new Error("no handler export");\n${READY}`,
		bundle: true,
	},
});

/**
 * Writes each entry, bundles the ones that are bundled, and returns the file to run per variant. A variant that
 * cannot be bundled (a middleware not written yet) is left out and reported, the others still run.
 */
const prepare = async (subject: string) => {
	mkdirSync(workDir, { recursive: true });
	const files: Record<string, string> = {};
	const sizes: Record<string, number> = {};
	const problems: string[] = [];
	for (const [index, [name, entry]] of Object.entries(entries(subject)).entries()) {
		if (!entry.bundle) {
			const file = `${workDir}/entry-${index}.mjs`;
			writeFileSync(file, entry.source);
			files[name] = file;
			continue;
		}
		const source = `${workDir}/entry-${index}.ts`;
		writeFileSync(source, entry.source);
		const outfile = `${workDir}/bundle-${index}.mjs`;
		const built = await build({
			entryPoints: [source],
			outfile,
			bundle: true,
			platform: "node",
			format: "esm",
			target: "node22",
			minify: true,
			// The workspace packages resolve to their sources through tsconfig `paths`, like vitest's aliases.
			tsconfig: `${root}tsconfig.json`,
			// mysql2 is CommonJS and requires Node builtins: give the ESM bundle a `require`, as Lambda bundlers do.
			banner: {
				js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);',
			},
			logLevel: "silent",
		}).catch((error: unknown) => {
			problems.push(
				`${name}: bundling failed: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`,
			);
			return undefined;
		});
		if (!built) continue;
		files[name] = outfile;
		sizes[name] = statSync(outfile).size;
	}
	return { files, sizes, problems };
};

/** Spawns `node file` and resolves when it prints its ready line; the child is killed then (it served its purpose). */
const spawnUntilReady = (file: string): Promise<void> =>
	new Promise((resolve, reject) => {
		const child = spawnTracked(process.execPath, [file], {
			stdio: ["ignore", "pipe", "pipe"],
			cwd: workDir,
			timeoutMs: 20_000,
			// Like Lambda: no inherited NODE_OPTIONS (a --cpu-prof of the bench must not profile every child).
			env: { PATH: process.env.PATH ?? "", NODE_ENV: "production" },
		});
		let stderr = "";
		child.stderr?.on("data", (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.stdout?.on("data", (chunk: Buffer) => {
			if (chunk.toString().includes("ready")) {
				resolve();
				child.kill("SIGKILL");
			}
		});
		child.once("exit", (code, signal) => {
			if (signal !== "SIGKILL")
				reject(new Error(`${file} exited (${code ?? signal}) before ready: ${stderr.trim()}`));
		});
		child.once("error", reject);
	});

export const runColdStartGroup = async (mode: Mode): Promise<ColdStartResult> => {
	const subject = existsSync(exampleHandler) ? exampleHandler : fallbackHandler;
	const { files, sizes, problems } = await prepare(subject);
	for (const problem of problems) mode.log(`  skipped ${problem}`);
	const contenders: Contender[] = Object.entries(files).map(([name, file]) => ({
		name,
		note: sizes[name] === undefined ? "unbundled" : `${(sizes[name] / 1024).toFixed(0)} KiB bundle`,
		invoke: () => spawnUntilReady(file),
	}));
	const rounds = coldStartRounds(mode);
	mode.log(`Cold start (${subject.slice(root.length)})`);
	const comparison = await runComparison(
		{
			id: "cold-start",
			title: "Cold start: spawn until the module scope has run",
			description: `A new \`node\` process per sample, timed from spawn to the ready line. Bundles made with esbuild (ESM, minified). Subject: \`${subject.slice(root.length)}\`. The reference is undici + mysql2 bundled bare.`,
			reference: NAMES.bare,
			contenders,
			batch: 1,
			warmup: 1,
			minRounds: rounds,
			maxRounds: rounds,
			budgetMs: 0,
		},
		mode.log,
	);
	return { comparison, subject: subject.slice(root.length), sizes, problems };
};
