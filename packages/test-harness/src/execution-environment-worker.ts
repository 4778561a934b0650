// The inside of one worker thread of a Lambda Managed Instances execution environment (started by
// execution-environment-workers.ts): it hosts the function's module as the Node runtime does in each of its
// AWS_LAMBDA_NODEJS_WORKER_COUNT workers.
//
// - Its own module scope: the module is imported once per worker, so module-level state (warm pools) belongs to
//   this worker alone. Nothing is shared with the other workers of the process but the process itself.
// - Many invocations at once: each `invoke` message starts the handler as soon as it arrives (async concurrency).
// - Never frozen: between invocations the thread keeps running.
// - `shutdown` calls the module's `shutdown` export (if any: e.g. `closeMysqlPools`), reports what is still
//   active, and lets go of the message port: a worker that leaves nothing open behind it then ends by itself.
//
// The workspace packages resolve by name to their `dist`, which a test run may not have built: `@middy-conn/<name>`
// is mapped to `packages/<name>/src/index.ts` here (the mapping tsconfig and vitest use), before the module loads.
import { registerHooks } from "node:module";
import { parentPort, workerData } from "node:worker_threads";
import type { Context } from "aws-lambda";
import type { SerializedError } from "./execution-environment.ts";
import { createLambdaContext } from "./lambda-events.ts";
import { workspaceSourceUrl } from "./workspace-sources.ts";

/** Parent to worker. */
export type ToWorker =
	| { type: "invoke"; id: number; requestId: string; deadlineMs: number; event: unknown }
	| { type: "shutdown" };

/** Worker to parent. */
export type FromWorker =
	| { type: "ready" }
	| { type: "init-error"; error: SerializedError }
	| { type: "result"; id: number; ok: true; value: unknown }
	| { type: "result"; id: number; ok: false; error: SerializedError }
	| { type: "shutdown-done"; report: unknown; error?: SerializedError; activeResources: string[] };

export interface WorkerSettings {
	/** The function module's file URL. */
	moduleUrl: string;
	exportName: string;
	functionName: string;
	memoryLimitInMB: number;
}

type Handler = (event: unknown, context: Context) => unknown;

registerHooks({
	resolve(specifier, context, nextResolve) {
		const source = workspaceSourceUrl(specifier);
		if (source) return { url: source.href, shortCircuit: true };
		return nextResolve(specifier, context);
	},
});

const port = parentPort;
if (!port) throw new Error("execution-environment-worker.ts runs in a worker thread only");
const settings = workerData as WorkerSettings;
const send = (message: FromWorker) => port.postMessage(message);

const serializeError = (error: unknown): SerializedError => {
	if (error instanceof Error) {
		const { code } = error as Error & { code?: unknown };
		return {
			name: error.name,
			message: error.message,
			...(typeof code === "string" ? { code } : {}),
			...(error.stack ? { stack: error.stack } : {}),
		};
	}
	return { name: "Error", message: String(error) };
};

let module: Record<string, unknown>;
try {
	module = (await import(settings.moduleUrl)) as Record<string, unknown>;
	if (typeof module[settings.exportName] !== "function") {
		throw new Error(`${settings.moduleUrl} has no exported function "${settings.exportName}"`);
	}
} catch (error) {
	send({ type: "init-error", error: serializeError(error) });
	throw error;
}
const handler = module[settings.exportName] as Handler;

const invoke = async (message: Extract<ToWorker, { type: "invoke" }>) => {
	const context = createLambdaContext({
		functionName: settings.functionName,
		awsRequestId: message.requestId,
		deadlineMs: message.deadlineMs,
		memoryLimitInMB: settings.memoryLimitInMB,
	});
	try {
		const value = await handler(message.event, context);
		// The runtime answers with JSON: a handler's undefined arrives as null, dates as strings.
		send({ type: "result", id: message.id, ok: true, value: JSON.parse(JSON.stringify(value ?? null)) });
	} catch (error) {
		send({ type: "result", id: message.id, ok: false, error: serializeError(error) });
	}
};

const shutdown = async () => {
	let error: SerializedError | undefined;
	let report: unknown;
	try {
		if (typeof module.shutdown === "function") await module.shutdown();
		if (typeof module.report === "function") report = await module.report();
	} catch (caught) {
		error = serializeError(caught);
	}
	// Sockets closed just now leave the list some turns later, more of them on a busy machine: look again for up to
	// 3 s (bounded), so that what is reported is what stayed open, not what was still closing.
	// Besides this port, which is let go of below.
	const stillActive = () => process.getActiveResourcesInfo().filter((resource) => resource !== "MessagePort");
	let activeResources = stillActive();
	for (const started = Date.now(); activeResources.length > 0 && Date.now() - started < 3000; ) {
		await new Promise((resolve) => setTimeout(resolve, 20));
		activeResources = stillActive();
	}
	send({ type: "shutdown-done", report, activeResources, ...(error ? { error } : {}) });
	// No more messages: with nothing else open, the thread ends by itself.
	port.unref();
};

port.on("message", (message: ToWorker) => {
	if (message.type === "invoke") void invoke(message);
	else if (message.type === "shutdown") void shutdown();
});

send({ type: "ready" });
