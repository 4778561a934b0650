// bundleHandler, which the examples' bundle tests, the demo, the soak and the benchmarks use, bundles as the
// examples' templates do: a source map beside the bundle, so that a stack trace run with --enable-source-maps (as
// the templates set NODE_OPTIONS) names the TypeScript sources.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { bundleHandler } from "../src/bundle-handler.ts";
import { repositoryRoot, runCommand } from "../src/packed-packages.ts";

const work = mkdtempSync(join(tmpdir(), "middy-conn-bundle-handler-"));

afterAll(() => {
	rmSync(work, { recursive: true, force: true });
});

describe("bundleHandler", () => {
	it("writes a source map beside the bundle, counts only the bundle's bytes, and its stack traces name handler.ts and the packages' sources", async () => {
		const bundle = await bundleHandler({
			entry: join(repositoryRoot, "examples", "webhook-relay", "handler.ts"),
			outfile: join(work, "handler.mjs"),
		});
		expect(bundle.sourcemap).toBe(join(work, "handler.mjs.map"));
		expect(existsSync(bundle.sourcemap)).toBe(true);
		expect(readFileSync(bundle.outfile, "utf8")).toMatch(/\/\/# sourceMappingURL=handler\.mjs\.map\s*$/);
		expect(bundle.bytes).toBe(statSync(bundle.outfile).size);

		const stack = (env: Record<string, string>) =>
			runCommand(
				process.execPath,
				[
					"--enable-source-maps",
					"--input-type=module",
					"-e",
					"try { await import('./handler.mjs'); } catch (error) { console.log(error.stack); }",
				],
				work,
				{ env: { PATH: process.env.PATH ?? "", ...env } },
			);
		expect(stack({})).toMatch(/environment variable PARTNER_ORIGIN is not set\n\s+at .*handler\.ts:\d+:\d+/);
		// The workspace's packages are bundled from their sources (the plugin in bundle-handler.ts).
		expect(stack({ PARTNER_ORIGIN: "ftp://partner.example.com" })).toMatch(
			/packages\/http-pool\/src\/options\.ts:\d+:\d+/,
		);
	});
});
