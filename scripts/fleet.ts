// `pnpm fleet`: a fleet-scale simulation (issue 11, point 1). Lambda scales a function out to many execution
// environments, and every one of them connects to the same MySQL server, which accepts only so many connections.
// N environments (Node processes, frozen with SIGSTOP between invocations) run one small transactional function in
// bursts against a throwaway MariaDB that lets the function's user open fewer connections than N, once for each
// way of connecting: the middleware's scoped mode (with and without connectRetry), its pool mode, serverless-mysql.
// See scripts/fleet/run.ts for what is measured, and docs/connection-budget.md for the last full run.
//
//   pnpm fleet                         24 environments, 10 app connections, 6 bursts; rewrites docs/connection-budget.md
//   pnpm fleet --quick                 8 environments, 4 app connections, 2 bursts (CI: checks that it runs)
//   pnpm fleet --environments N --max-connections M --bursts B --burst-size K --pause MS
//                                      explore (docs/connection-budget.md only with --write)
//
// It asserts no timing. It exits non-zero when the simulation itself broke (a harness error), when a connection
// outlived the environments that opened it (a leak), and, in a full run (not --quick) whose burst is 2–3× the app's
// connections, when scoped mode misses issue 11's goal: every invocation of the burst served, and exactly one row
// committed per invocation. --quick (CI) checks that the simulation runs, and no contender's outcome.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { runScript } from "./cleanup.ts";
import { details, legend, scopedGoal, settingsLine, summary, textTable, writeDoc } from "./fleet/report.ts";
import { type FleetSettings, runFleet } from "./fleet/run.ts";

const usage =
	"usage: pnpm fleet [--quick] [--environments N] [--max-connections M] [--bursts B] [--burst-size K] [--pause MS] [--write]\n" +
	"  --environments N     execution environments (default 24; --quick 8)\n" +
	"  --max-connections M  connections the server accepts from the function's user (default 10; --quick 4);\n" +
	"                       max_connections is set to M plus the driver's own connections\n" +
	"  --bursts B           bursts of concurrent invocations (default 6; --quick 2)\n" +
	"  --burst-size K       environments invoked per burst, taking turns (default: all of them); the others stay\n" +
	"                       frozen through the burst with what they hold\n" +
	"  --pause MS           how long every environment stays frozen after each burst (default 400, 100 to 60000);\n" +
	"                       serverless-mysql reclaims an idle connection only after 3 s: to see it, --pause 4000\n" +
	"                       with a --burst-size below N (e.g. --burst-size 12 --pause 4000)\n" +
	"  --write              rewrite docs/connection-budget.md even when the settings are not the defaults\n";

const { values } = parseArgs({
	// pnpm passes a lone `--` through when asked to: not an argument of ours.
	args: process.argv.slice(2).filter((arg) => arg !== "--"),
	options: {
		quick: { type: "boolean", default: false },
		environments: { type: "string" },
		"max-connections": { type: "string" },
		bursts: { type: "string" },
		"burst-size": { type: "string" },
		pause: { type: "string" },
		write: { type: "boolean", default: false },
		help: { type: "boolean", short: "h", default: false },
	},
	strict: true,
});
if (values.help) {
	process.stdout.write(usage);
	process.exit(0);
}

const integer = (flag: string, text: string | undefined, fallback: number, max: number, min = 1): number => {
	if (text === undefined) return fallback;
	const value = Number(text);
	if (!Number.isSafeInteger(value) || value < min || value > max) {
		process.stderr.write(`--${flag} must be an integer from ${min} to ${max}\n${usage}`);
		process.exit(2);
	}
	return value;
};

const environments = integer("environments", values.environments, values.quick ? 8 : 24, 200);
const settings: FleetSettings = {
	quick: values.quick,
	environments,
	appConnections: integer("max-connections", values["max-connections"], values.quick ? 4 : 10, 500),
	bursts: integer("bursts", values.bursts, values.quick ? 2 : 6, 100),
	burstSize: integer("burst-size", values["burst-size"], environments, environments),
	// Long enough for a frozen fleet's connections to show on the server, short enough to keep the run small.
	// serverless-mysql kills an idle connection of its user only once the processlist shows it idle 3 s
	// (zombieMinTimeout, whole seconds), and only one that no environment of this burst uses: its reclaim shows with
	// a pause over 3000 ms and a burst size below N. Bounded (a run lasts at least bursts × pause × contenders).
	pauseMs: integer("pause", values.pause, 400, 60_000, 100),
	// ~50–100 ms of work per invocation with the connection held: a short transaction with some computing or a
	// downstream call in the middle.
	workMs: 75,
	// Room for a connect that must wait for slots to free up, well above what one invocation needs.
	timeoutMs: 6000,
};
const customized =
	values.environments !== undefined ||
	values["max-connections"] !== undefined ||
	values.bursts !== undefined ||
	values["burst-size"] !== undefined ||
	values.pause !== undefined;

const started = performance.now();
const elapsed = () => ((performance.now() - started) / 1000).toFixed(1);
const say = (line: string) => console.log(`[${elapsed().padStart(5)}s] ${line}`);

const main = async (): Promise<number> => {
	console.log(
		`middy-conn fleet: one function scaled out to ${settings.environments} Lambda execution environments against a MySQL server that is too small for them${settings.quick ? " (quick)" : ""}`,
	);
	const run = await runFleet({ settings, say });
	console.log("");
	console.log("What was simulated");
	for (const line of summary(run)) console.log(`  ${line}`);
	console.log("");
	console.log(`Settings: ${settingsLine(run)}`);
	console.log("");
	for (const line of textTable(run)) console.log(line);
	console.log("");
	for (const line of legend(run)) console.log(`  ${line}`);
	console.log("");
	for (const line of details(run)) console.log(`  ${line}`);
	console.log("");

	const leaks = run.results.reduce((sum, result) => sum + result.leaked, 0) + run.finalLeaks;
	const goal = scopedGoal(run);
	console.log(goal.line);
	console.log("");
	if (!settings.quick && (!customized || values.write)) {
		const command = `pnpm fleet${process.argv
			.slice(2)
			.filter((arg) => arg !== "--")
			.map((arg) => ` ${arg}`)
			.join("")}`;
		writeDoc(
			run,
			join(fileURLToPath(new URL("..", import.meta.url)), "docs", "connection-budget.md"),
			command,
		);
		say("wrote docs/connection-budget.md");
	} else if (!settings.quick) {
		say(
			"docs/connection-budget.md left as it is: these are not the default settings (--write rewrites it anyway)",
		);
	}
	console.log(
		leaks === 0
			? `no connection outlived its environment (${elapsed()} s)`
			: `✗ ${leaks} connection(s) outlived the environments that opened them (${elapsed()} s)`,
	);
	return leaks === 0 && (!goal.checked || goal.met) ? 0 : 1;
};

// Exits with main's code once everything the run started is closed (scripts/cleanup.ts), on every exit path; a
// stray timer somewhere (a driver's, a harness's) must not keep the run waiting.
await runScript("fleet", main);
