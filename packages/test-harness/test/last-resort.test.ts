// The last-resort cleanup (src/last-resort.ts), in a Node process of its own per case: what it registers is undone
// at exit and on a signal, newest first; a signal keeps its default outcome unless a script has taken the signals,
// and then the steps wait for that script's exit.
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";

const MODULE = new URL("../src/last-resort.ts", import.meta.url).href;

interface Ended {
	/** What the process wrote, one line per event. */
	lines: string[];
	code: number | null;
	signal: NodeJS.Signals | null;
}

/**
 * Runs `body` as an ES module that has `atLastResort`, `handleSignals` and `say(line)` (a synchronous write to
 * stdout) in scope. The process is killed after 10 s if it has not ended: none outlives the test.
 */
const run = (body: string): Promise<Ended> => {
	const source = [
		`import { atLastResort, handleSignals } from ${JSON.stringify(MODULE)};`,
		`import { writeSync } from "node:fs";`,
		`const say = (line) => writeSync(1, line + "\\n");`,
		"setTimeout(() => {}, 10_000);",
		body,
	].join("\n");
	const child = spawn(process.execPath, ["--no-warnings", "--input-type=module", "-e", source], {
		stdio: ["ignore", "pipe", "inherit"],
	});
	const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
	let out = "";
	child.stdout.on("data", (chunk: Buffer) => {
		out += chunk.toString();
	});
	return new Promise((resolve) => {
		child.once("close", (code, signal) => {
			clearTimeout(killer);
			resolve({ lines: out.split("\n").filter(Boolean), code, signal });
		});
	});
};

describe("atLastResort", () => {
	it("runs every step at exit, newest first, and not one that was forgotten", async () => {
		const ended = await run(`
			atLastResort(() => say("first"));
			const forget = atLastResort(() => say("forgotten"));
			atLastResort(() => say("last"));
			forget();
			process.exit(3);
		`);
		expect(ended).toEqual({ lines: ["last", "first"], code: 3, signal: null });
	});

	it("runs the steps on SIGTERM, the process then ends by the signal, and onSignal: false waits for an exit", async () => {
		const ended = await run(`
			atLastResort(() => say("at exit only"), { onSignal: false });
			atLastResort(() => say("on the signal"));
			process.kill(process.pid, "SIGTERM");
		`);
		expect(ended).toEqual({ lines: ["on the signal"], code: null, signal: "SIGTERM" });
	});

	it("runs the next steps even when one throws", async () => {
		const ended = await run(`
			atLastResort(() => say("still run"));
			atLastResort(() => { throw new Error("step failed"); });
			process.exit(0);
		`);
		expect(ended).toEqual({ lines: ["still run"], code: 0, signal: null });
	});
});

describe("handleSignals", () => {
	it("hands every signal to the script, the second one too, and the steps run at the exit it chooses", async () => {
		const ended = await run(`
			atLastResort(() => say("step"));
			let signals = 0;
			handleSignals((signal) => {
				say("handler: " + signal);
				if (++signals === 1) process.kill(process.pid, "SIGINT");
				else process.exit(130);
			});
			process.kill(process.pid, "SIGINT");
		`);
		expect(ended).toEqual({ lines: ["handler: SIGINT", "handler: SIGINT", "step"], code: 130, signal: null });
	});
});
