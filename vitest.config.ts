import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (name: string, entry = "index") =>
	fileURLToPath(new URL(`./packages/${name}/src/${entry}.ts`, import.meta.url));

// One config for the packages and the examples. Tests import the workspace packages from source, so a test run
// never depends on a stale build; the packed-install test is the one that exercises the published dist.
export default defineConfig({
	resolve: {
		// Exact names: `@middy-conn/lifecycle/internal` must not be read as `@middy-conn/lifecycle` + "/internal".
		alias: [
			{ find: /^@middy-conn\/lifecycle$/, replacement: src("lifecycle") },
			{ find: /^@middy-conn\/lifecycle\/internal$/, replacement: src("lifecycle", "internal") },
			{ find: /^@middy-conn\/http-pool$/, replacement: src("http-pool") },
			{ find: /^@middy-conn\/mysql$/, replacement: src("mysql") },
			{ find: /^@middy-conn\/test-harness$/, replacement: src("test-harness") },
		],
	},
	test: {
		include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "test/**/*.test.ts"],
		// One throwaway MySQL server for the whole run, not one per file.
		globalSetup: ["./packages/test-harness/src/vitest-global-setup.ts"],
		pool: "forks",
		testTimeout: 30_000,
		hookTimeout: 60_000,
		// Two cores: files run two at a time; each test file owns its own HTTP servers and database schema.
		maxWorkers: 2,
	},
});
