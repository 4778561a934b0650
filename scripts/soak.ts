// `pnpm soak [--invocations N] [--seed S]`: the reliability soak (issue 7). The examples' functions, and three of
// the soak's own (a response-streaming one, one with a managed transaction and a timeoutEarlyResponse that answers,
// and that one again in a Managed Instances environment that runs several invocations at once), run in Lambda-like
// execution environments (child processes, frozen between invocations) against a throwaway MySQL and four partner
// HTTPS APIs on loopback, while a seeded mix of faults is injected: handlers and `after`s that throw, early
// responses after the DB and HTTP were used or with a DB write handed to waitUntil, Middy's early timeout during a
// query and during an HTTP request, a timeoutEarlyResponse that answers mid-transaction, KILLed connections, DB
// restarts (with every environment frozen, and while invocations run: gracefully or by a crash), streamed bodies
// from the DB and from a partner that break off midway or meet a slow or broken client, partners that reset
// connections, close idle sockets or stall bodies, freezes longer than the keep-alive, malformed events. Every
// invariant is checked as it runs and reckoned at the end.
//
// It prints a table of the faults against their outcomes, the invariants as figures (among them how many
// statements of timed-out invocations were still running on the server a second after the invocation returned),
// and ends with the line `N invocations, F faults, L leaks, X lost, D duplicated`. It exits 0 only when nothing
// leaked, nothing was lost, nothing was duplicated, no timed-out statement was left running, and every failure was
// a clear one that its fault explains. Two documented outcomes are counted and reported on lines of their own, and
// do not fail the run (invariants.ts, NOTED): a batch half-committed by a timeoutEarlyResponse while the handler
// awaited a timer (the known gap), and a streamed export committed at the end of its body whose response stream
// then broke (answer lost after commit).
//
// See docs/reliability.md.
import { runScript } from "./cleanup.ts";
import { faultTable, lastLine, notedLines, violationGroups } from "./soak/report.ts";
import { runSoak } from "./soak/run.ts";

const usage = "usage: pnpm soak [--invocations N] [--seed S]   (N: 1 to 1000000, default 10000)";

const parseArgs = (args: string[]): { invocations: number; seed: number } => {
	let invocations = 10_000;
	let seed = Math.floor(Math.random() * 2 ** 31);
	for (let i = 0; i < args.length; i++) {
		const [flag, inline] = (args[i] as string).split("=", 2) as [string, string | undefined];
		const value = () => {
			const text = inline ?? args[++i];
			const number = Number(text);
			if (text === undefined || !Number.isSafeInteger(number))
				throw new Error(`${flag} needs an integer\n${usage}`);
			return number;
		};
		if (flag === "--") continue;
		if (flag === "--invocations") invocations = value();
		else if (flag === "--seed") seed = value();
		else throw new Error(`unknown argument ${args[i]}\n${usage}`);
	}
	if (invocations < 1 || invocations > 1_000_000)
		throw new Error(`--invocations must be 1 to 1000000\n${usage}`);
	return { invocations, seed: seed >>> 0 };
};

const started = performance.now();
const elapsed = () => ((performance.now() - started) / 1000).toFixed(1);
const say = (line: string) => console.log(`[${elapsed().padStart(6)}s] ${line}`);

const main = async (): Promise<number> => {
	const options = parseArgs(process.argv.slice(2));
	console.log(
		"middy-conn soak: the examples' functions under a seeded mix of faults, as AWS Lambda runs them",
	);
	const { ledger, figures } = await runSoak({ ...options, say });
	const failed = ledger.violations.length > 0;
	console.log("");
	console.log(
		"Faults and outcomes (an invocation may also carry background tasks or SQS records: delivered / reported failed)",
	);
	for (const line of faultTable(ledger)) console.log(line);
	if (failed) {
		console.log("");
		console.log("Violations, by kind, fault and function");
		for (const line of violationGroups(ledger)) console.log(`  - ${line}`);
	}
	console.log("");
	console.log("Invariants");
	for (const figure of figures) console.log(`  - ${figure}`);
	const unexpected = ledger.count("unexpected");
	console.log(
		`  - failures: every one a clear error its fault explains${unexpected === 0 ? "" : ` — except ${unexpected} (listed above)`}`,
	);
	console.log(
		`  - statements of timed-out invocations still running on the server 1 s after the invocation returned: ${ledger.count("running")}`,
	);
	// Documented outcomes: counted and reported on their own lines, never counted as leaks or losses.
	for (const line of notedLines(ledger)) console.log(`  - ${line}`);
	console.log(
		`  - ${elapsed()} s, seed ${options.seed} (\`pnpm soak --invocations ${options.invocations} --seed ${options.seed}\` replays this plan)`,
	);
	console.log(lastLine(ledger));
	return failed ? 1 : 0;
};

// Exits with main's code once everything the soak started is closed (scripts/cleanup.ts), on every exit path; a
// driver's stray timer must not keep the soak waiting.
await runScript("soak", main, {
	onError: (error) => console.error(error instanceof Error ? error.message : error),
});
