// What a release publishes: `changeset version` turns the pending changesets into versions and CHANGELOG entries.
// Run here on a copy of the manifests, it must give the three published packages one version (they are released
// together and depend on each other), a CHANGELOG each, and no README or doc may tell users to install a version
// of them that this release does not give.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishedPackages, repositoryRoot, runCommand } from "../src/packed-packages.ts";

const work = mkdtempSync(join(tmpdir(), "middy-conn-release-"));
const manifestOf = (folder: string) =>
	JSON.parse(readFileSync(join(work, folder, "package.json"), "utf8")) as { version: string };

/** The packages have never been published: their manifests are still at 0.0.0. */
const unreleased = publishedPackages.every(
	(name) =>
		(
			JSON.parse(readFileSync(join(repositoryRoot, "packages", name, "package.json"), "utf8")) as {
				version: string;
			}
		).version === "0.0.0",
);

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

	it.each(publishedPackages)("ships @middy-conn/%s's CHANGELOG in its tarball", (name) => {
		const listing = JSON.parse(
			runCommand("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], join(work, "packages", name)),
		) as { files: { path: string }[] }[];
		expect(listing[0]?.files.map((file) => file.path)).toContain("CHANGELOG.md");
	});

	// Nobody installed 0.0.0: changes between unreleased states are not news to anyone, and a first CHANGELOG that
	// says "were HTTP_POOL_*" or "used to warn" would describe versions that never existed.
	it.skipIf(!unreleased).each(publishedPackages)(
		"before the first publish, writes @middy-conn/%s's CHANGELOG as one first-release entry",
		(name) => {
			const changelog = readFileSync(join(work, "packages", name, "CHANGELOG.md"), "utf8");
			const entries = changelog
				.split("\n")
				.filter((line) => line.startsWith("- ") && line !== "- Updated dependencies");
			expect(entries).toEqual(["- First release."]);
		},
	);

	it("leaves no README or doc telling users to install a version of the packages that the release does not give", () => {
		const version = manifestOf(join("packages", "mysql")).version;
		let compared = 0;
		for (const document of documents) {
			for (const range of versionsToInstall(readFileSync(join(repositoryRoot, document), "utf8"))) {
				compared += 1;
				expect({ document, range, admitsTheRelease: admits(range, version) }).toEqual({
					document,
					range,
					admitsTheRelease: true,
				});
			}
		}
		// The check reads something: the docs do tell users what to install.
		expect(compared).toBeGreaterThan(0);
	});

	it("reads every form a document may use to name a version of the packages", () => {
		expect(
			versionsToInstall(
				[
					"npm i @middy-conn/mysql@^0.3.0 @middy-conn/http-pool@latest",
					'```json\n{ "@middy-conn/http-pool": "~0.4.1", "@middy-conn/mysql": "workspace:^" }\n```',
					"Here they depend on `@middy-conn/*` as `workspace:^`. Replace it with the published range (e.g. `^0.5.0`).",
					"`@middy/core` `^7.8.0` and `mysql2` `^3.23.3` are peers of `@middy-conn/mysql` (ranges of other packages).",
				].join("\n\n"),
			),
		).toEqual(["^0.3.0", "~0.4.1", "^0.5.0"]);
		expect(["^0.1.0", "~0.1.0", "0.1.0", "^1.2.0"].map((range) => admits(range, "0.1.2"))).toEqual([
			true,
			true,
			false,
			false,
		]);
		expect(["^0.1.0", "^1.2.0", "^1.3.0"].map((range) => admits(range, "1.2.5"))).toEqual([
			false,
			true,
			false,
		]);
	});
});

/** Every Markdown document a user reads: the root README, docs/, examples/, and each package's and example's folder. */
const documents = [
	"README.md",
	...["docs", "examples", ...workspaceFolders].flatMap((folder) =>
		readdirSync(join(repositoryRoot, folder))
			.filter((file) => file.endsWith(".md") && file !== "CHANGELOG.md")
			.map((file) => join(folder, file)),
	),
];

const ours = String.raw`@middy-conn\/(?:lifecycle|http-pool|mysql)`;
const semverRange = String.raw`[\^~]?\d+\.\d+\.\d+`;

/**
 * The versions of the published packages that a document tells users to install, in the forms a doc uses: an
 * install line (`@middy-conn/mysql@^0.1.0`; a dist-tag such as `@latest` is always right), a manifest
 * (`"@middy-conn/mysql": "^0.1.0"`; `workspace:` is the repository's own link), and a bare range in code (e.g.
 * `^0.1.0`) in a paragraph about the packages (one that names `@middy-conn/` or `workspace:`).
 */
const versionsToInstall = (text: string): string[] => {
	const found: string[] = [];
	for (const paragraph of text.split(/\n[ \t]*\n/)) {
		let rest = paragraph;
		for (const pattern of [
			new RegExp(`${ours}@(${semverRange})`, "g"),
			new RegExp(`"${ours}"\\s*:\\s*"(${semverRange})"`, "g"),
		]) {
			for (const match of rest.matchAll(pattern)) found.push(match[1] as string);
			rest = rest.replace(pattern, "");
		}
		if (!/@middy-conn\/|workspace:/.test(paragraph)) continue;
		// A range of another package is written next to its name: `mysql2` `^3.23.3`, `@middy/core` ≥ 7.8.
		for (const match of rest.matchAll(new RegExp(`(\`[^\`\\s]+\`\\s*)?\`(${semverRange})\``, "g"))) {
			if (!match[1] || /@middy-conn\//.test(match[1])) found.push(match[2] as string);
		}
	}
	return found;
};

/** Whether `range` (`x.y.z`, `^x.y.z` or `~x.y.z`, as npm reads them) admits `version`. */
const admits = (range: string, version: string): boolean => {
	const [low, wanted] = [range.replace(/^[\^~]/, ""), version].map((v) => v.split(".").map(Number)) as [
		number[],
		number[],
	];
	const [major = 0, minor = 0, patch = 0] = low;
	const [vMajor = 0, vMinor = 0, vPatch = 0] = wanted;
	const atLeast = vMajor * 1e6 + vMinor * 1e3 + vPatch >= major * 1e6 + minor * 1e3 + patch;
	if (range.startsWith("~")) return atLeast && vMajor === major && vMinor === minor;
	if (!range.startsWith("^")) return vMajor === major && vMinor === minor && vPatch === patch;
	// ^0.y.z stays within 0.y (npm's caret keeps the left-most non-zero part); ^x.y.z within x.
	return atLeast && vMajor === major && (major !== 0 || vMinor === minor);
};
