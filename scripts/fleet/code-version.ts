// Which code a fleet run measured: the commit and, when the working tree differed from it in code, which files did,
// so that a reader of docs/connection-budget.md can tell a clean measurement from one of work in progress. Read
// when the run starts, as the function is bundled: files changed later are not in what was measured.
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const repositoryRoot = fileURLToPath(new URL("../../", import.meta.url));
/** The folders whose changes can move the figures: the packages, the simulation, the examples it may borrow from. */
const CODE_FOLDERS = ["packages", "scripts", "examples"];
const LISTED_AT_MOST = 12;

/**
 * The commit the figures were measured on and, when the working tree differed from it in code, which files did: a
 * reader can tell a clean measurement from one of work in progress, and what was in progress.
 */
export const codeVersion = (): string => {
	try {
		const git = (...args: string[]) =>
			execFileSync("git", ["-C", repositoryRoot, ...args], { encoding: "utf8" });
		const commit = git("rev-parse", "--short", "HEAD").trim();
		// Porcelain lines are "XY path" (or "XY old -> new"), paths relative to the repository's root.
		const dirty = git("status", "--porcelain", "--untracked-files=all", "--", ...CODE_FOLDERS)
			.split("\n")
			.filter((line) => line.length > 3)
			.map((line) => line.slice(3).split(" -> ").at(-1) ?? "");
		if (dirty.length === 0) return commit;
		const listed = dirty.slice(0, LISTED_AT_MOST).map((path) => `\`${path}\``);
		const more = dirty.length > LISTED_AT_MOST ? ` and ${dirty.length - LISTED_AT_MOST} more` : "";
		return `${commit} + uncommitted changes to ${listed.join(", ")}${more}`;
	} catch {
		return "unknown (not a git checkout)";
	}
};
