import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

// One config for the packages and the examples. Tests import the workspace packages from source, so a test run
// never depends on a stale build; the packed-install test is the one that exercises the published dist.
export default defineConfig({
	resolve: {
		alias: {
			"@middy-conn/lifecycle": src("lifecycle"),
			"@middy-conn/http-pool": src("http-pool"),
			"@middy-conn/mysql": src("mysql"),
			"@middy-conn/test-harness": src("test-harness"),
		},
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
