// What a release publishes: `changeset version` turns the pending changesets into versions and CHANGELOG entries.
// Run here on a copy of the manifests, it must give the three published packages one version (they are released
// together and depend on each other), a CHANGELOG each, and no README or doc may tell users to install a version
// of them other than that one.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishedPackages, repositoryRoot } from "../src/packed-packages.ts";

const work = mkdtempSync(join(tmpdir(), "middy-conn-release-"));
const manifestOf = (folder: string) =>
	JSON.parse(readFileSync(join(work, folder, "package.json"), "utf8")) as { version: string };

/** Every workspace folder with a package.json (the manifests changesets reads). */
const workspaceFolders = ["packages", "examples"].flatMap((parent) =>
	readdirSync(join(repositoryRoot, parent), { withFileTypes: true })
		.filter(
			(entry) => entry.isDirectory() && existsSync(join(repositoryRoot, parent, entry.name, "package.json")),
		)
		.map((entry) => join(parent, entry.name)),
);

beforeAll(() => {
	for (const file of ["package.json", "pnpm-workspace.yaml", ".changeset", "scripts/package.json"]) {
		mkdirSync(dirname(join(work, file)), { recursive: true });
		cpSync(join(repositoryRoot, file), join(work, file), { recursive: true });
	}
	for (const folder of workspaceFolders) {
		mkdirSync(join(work, folder), { recursive: true });
		cpSync(join(repositoryRoot, folder, "package.json"), join(work, folder, "package.json"));
	}
	const changesets = join(repositoryRoot, "node_modules", "@changesets", "cli", "bin.js");
	execFileSync(process.execPath, [changesets, "version"], { cwd: work, encoding: "utf8", timeout: 60_000 });
}, 120_000);

afterAll(() => {
	rmSync(work, { recursive: true, force: true });
});

describe("the next release (changeset version)", () => {
	it("gives the published packages one version, above the unreleased 0.0.0", () => {
		const versions = publishedPackages.map((name) => manifestOf(join("packages", name)).version);
		expect(new Set(versions).size).toBe(1);
		expect(versions[0]).not.toBe("0.0.0");
	});

	it.each(publishedPackages)("writes a CHANGELOG for @middy-conn/%s with that version", (name) => {
		const version = manifestOf(join("packages", name)).version;
		const changelog = readFileSync(join(work, "packages", name, "CHANGELOG.md"), "utf8");
		expect(changelog).toContain(`# @middy-conn/${name}`);
		expect(changelog).toContain(`## ${version}`);
	});

	it("leaves no README or doc naming another version of the packages", () => {
		const version = manifestOf(join("packages", "mysql")).version;
		const documents = [
			"README.md",
			...["docs", ...workspaceFolders].flatMap((folder) =>
				readdirSync(join(repositoryRoot, folder))
					.filter((file) => file.endsWith(".md") && file !== "CHANGELOG.md")
					.map((file) => join(folder, file)),
			),
		];
		for (const document of documents) {
			const text = readFileSync(join(repositoryRoot, document), "utf8");
			for (const match of text.matchAll(
				/@middy-conn\/(?:lifecycle|http-pool|mysql)@[\^~]?(\d+\.\d+\.\d+)/g,
			)) {
				expect({ document, version: match[1] }).toEqual({ document, version });
			}
		}
	});
});
