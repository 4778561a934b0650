// A Node.js binary of a given version, for tests that must run on the floor Node the packages declare (undici 8
// needs 22.19) as well as on the current one. Fetched once from the npm registry (the `node-linux-<arch>` package,
// as ./run fetches Node 24) into .tools/, which git ignores.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { repositoryRoot, runCommand } from "./packed-packages.ts";

/** The path of a Node binary of exactly `version`, fetched on first use. */
export const nodeBinary = (version: string): string => {
	const arch = process.arch === "arm64" ? "arm64" : "x64";
	if (process.platform !== "linux")
		throw new Error(`nodeBinary: no node-linux package for ${process.platform}`);
	const prefix = join(repositoryRoot, ".tools", `node-${version}`);
	const binary = join(prefix, "node_modules", `node-linux-${arch}`, "bin", "node");
	if (!existsSync(binary)) {
		mkdirSync(prefix, { recursive: true });
		runCommand(
			"npm",
			[
				"install",
				"--prefix",
				prefix,
				"--no-save",
				"--no-package-lock",
				"--no-audit",
				"--no-fund",
				"--loglevel=error",
				`node-linux-${arch}@${version}`,
			],
			repositoryRoot,
			{ timeoutMs: 300_000 },
		);
	}
	const reported = runCommand(binary, ["-p", "process.versions.node"], repositoryRoot).trim();
	if (reported !== version) throw new Error(`nodeBinary: ${binary} is Node ${reported}, not ${version}`);
	return binary;
};
