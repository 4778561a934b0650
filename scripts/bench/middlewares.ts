// The middlewares under test, loaded from their TypeScript sources so that `pnpm bench` needs no build step.
//
// Node strips types from .ts files but refuses to do so under node_modules, and the workspace packages resolve
// each other by name through node_modules to their (unbuilt) dist. A resolve hook maps the `@middy-conn/*` names
// to `packages/<name>/src/index.ts` instead, the same mapping as tsconfig `paths` and vitest's aliases. The code
// that runs is the same JavaScript a build would emit (type stripping only removes types).
//
// The packages are written in parallel with this benchmark: a missing or broken one is reported and its
// contenders are skipped, instead of failing the whole run.
//
// MIDDY_CONN_BENCH_SOURCES=<dir> takes a package from <dir>/packages/<name>/src/index.ts when that exists, to
// measure a proposed change against the same run's baselines without touching the working tree (a patched copy
// outside the repo still resolves undici, mysql2 and @middy/* from the repo's node_modules when placed under it,
// e.g. in .tmp/).
import { existsSync } from "node:fs";
import { registerHooks } from "node:module";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const root = new URL("../../", import.meta.url);
const override = process.env.MIDDY_CONN_BENCH_SOURCES
	? pathToFileURL(`${resolve(process.env.MIDDY_CONN_BENCH_SOURCES)}/`)
	: undefined;

const sourceOf = (name: string): URL => {
	const path = `packages/${name}/src/index.ts`;
	if (override && existsSync(new URL(path, override))) return new URL(path, override);
	return new URL(path, root);
};

registerHooks({
	resolve(specifier, context, nextResolve) {
		const match = /^@middy-conn\/([a-z-]+)$/.exec(specifier);
		if (match?.[1]) {
			const source = sourceOf(match[1]);
			if (existsSync(source)) return { url: source.href, shortCircuit: true };
		}
		return nextResolve(specifier, context);
	},
});

export type HttpPoolModule = typeof import("../../packages/http-pool/src/index.ts");
export type MysqlModule = typeof import("../../packages/mysql/src/index.ts");

export interface Loaded<T> {
	module: T | undefined;
	/** Why the module is missing, for the report. */
	problem: string | undefined;
}

const load = async <T>(name: string): Promise<Loaded<T>> => {
	const source = sourceOf(name);
	if (!existsSync(source))
		return { module: undefined, problem: `packages/${name}/src/index.ts does not exist yet` };
	if (override && source.href.startsWith(override.href)) {
		process.stderr.write(`[bench] ${name} from ${source.pathname}\n`);
	}
	try {
		return { module: (await import(source.href)) as T, problem: undefined };
	} catch (error) {
		return { module: undefined, problem: `packages/${name} failed to load: ${String(error)}` };
	}
};

export const loadHttpPool = () => load<HttpPoolModule>("http-pool");
export const loadMysql = () => load<MysqlModule>("mysql");
