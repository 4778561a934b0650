// docs/troubleshooting.md goes from an error's `code` to its cause and its fix: every code the packages export
// has a row there, in the section of the package that raises it, and the page names no code that no package
// exports (a renamed or removed code would leave a reader looking for something that never happens).
import { readFileSync } from "node:fs";
import { errorCodes as httpPoolErrorCodes } from "@middy-conn/http-pool";
import { lifecycleErrorCodes } from "@middy-conn/lifecycle";
import { errorCodes as mysqlErrorCodes } from "@middy-conn/mysql";
import { describe, expect, it } from "vitest";

const page = readFileSync(new URL("../docs/troubleshooting.md", import.meta.url), "utf8");

/** The page's level-2 sections, by heading. */
const sections = new Map(
	page
		.split(/^## /m)
		.slice(1)
		.map((section) => [section.slice(0, section.indexOf("\n")).trim(), section] as const),
);

/** The codes in the first cell of a table row of `section`: the codes a reader can look up there. */
const codesInFirstColumn = (section: string): Set<string> =>
	new Set(
		section
			.split("\n")
			.filter((line) => line.startsWith("| "))
			.flatMap((line) => [...(line.split(" | ")[0] ?? "").matchAll(/`([A-Z][A-Z0-9_]+)`/g)])
			.map((match) => match[1] as string),
	);

const exported = {
	"@middy-conn/lifecycle": Object.values(lifecycleErrorCodes),
	"@middy-conn/mysql": Object.values(mysqlErrorCodes),
	"@middy-conn/http-pool": Object.values(httpPoolErrorCodes),
} as const;

describe("docs/troubleshooting.md", () => {
	it.each(Object.entries(exported))(
		"has a row for every error code %s exports, in its section",
		(name, codes) => {
			const heading = [...sections.keys()].find((title) => title.startsWith(`\`${name}\``));
			expect(heading, `a section titled \`${name}\``).toBeDefined();
			const documented = codesInFirstColumn(sections.get(heading as string) as string);
			expect(codes.length).toBeGreaterThan(0);
			for (const code of codes) expect(documented, `${code} in the ${name} section`).toContain(code);
		},
	);

	it("names no MIDDY_CONN_ code that no package exports", () => {
		const known = new Set<string>(Object.values(exported).flat());
		const named = new Set([...page.matchAll(/MIDDY_CONN_[A-Z0-9_]+/g)].map((match) => match[0]));
		expect(named.size).toBeGreaterThan(0);
		expect([...named].filter((code) => !known.has(code))).toEqual([]);
	});
});
