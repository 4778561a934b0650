// The packages as npm will publish them: `pnpm pack` runs each package's prepack (a clean build) and rewrites
// `workspace:^` to real versions. For tests that install them as a user does, outside the workspace.
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const repositoryRoot = fileURLToPath(new URL("../../../", import.meta.url));

/** The packages that are published, in dependency order. */
export const publishedPackages = ["lifecycle", "http-pool", "mysql"] as const;
export type PublishedPackage = (typeof publishedPackages)[number];

/** Runs a command, failing with its output when it fails (or runs past `timeoutMs`). */
export const runCommand = (
	command: string,
	args: string[],
	cwd: string,
	{ timeoutMs = 180_000, env = process.env }: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): string => {
	const result = spawnSync(command, args, { cwd, encoding: "utf8", timeout: timeoutMs, env });
	if (result.status !== 0) {
		throw new Error(
			`${command} ${args.join(" ")} failed (${result.status ?? result.signal}):\n${result.stdout}\n${result.stderr}`,
		);
	}
	return result.stdout;
};

/**
 * Packs every published package into `destination`; returns each one's tarball path. Packing builds the package
 * in place (`rm -rf dist && tsc`), so two test files packing at once would break each other's build: a lock folder
 * makes them take turns (bounded: a lock left by a killed run is taken over after 5 minutes).
 */
export const packPublishedPackages = (destination: string): Record<PublishedPackage, string> => {
	const lock = join(repositoryRoot, ".tmp", "pack.lock");
	mkdirSync(dirname(lock), { recursive: true });
	const deadline = Date.now() + 5 * 60_000;
	for (;;) {
		try {
			mkdirSync(lock);
			break;
		} catch {
			if (Date.now() > deadline) {
				rmSync(lock, { recursive: true, force: true });
				continue;
			}
			Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
		}
	}
	try {
		return packEach(destination);
	} finally {
		rmSync(lock, { recursive: true, force: true });
	}
};

const packEach = (destination: string): Record<PublishedPackage, string> => {
	const tarballs = {} as Record<PublishedPackage, string>;
	for (const name of publishedPackages) {
		runCommand("pnpm", ["pack", "--pack-destination", destination], join(repositoryRoot, "packages", name));
		const file = readdirSync(destination).find(
			(entry) => entry.startsWith(`middy-conn-${name}-`) && entry.endsWith(".tgz"),
		);
		if (!file) throw new Error(`no tarball for ${name} in ${destination}`);
		tarballs[name] = join(destination, file);
	}
	return tarballs;
};
