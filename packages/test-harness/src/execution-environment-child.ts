// The inside of one execution environment: a Node process that hosts one function, as Lambda's Node runtime does.
// Started by function-process.ts, for either kind of environment, with the module's path and the export's name
// as arguments.
//
// - Cold start: the first invocation imports the module (module scope runs once, as in Lambda's init phase).
// - Every invocation ends when the handler's promise settles: the result is posted at once, and nothing else is
//   waited for (timers, sockets and promises still pending are frozen with the process by the parent).
// - An unhandled rejection or uncaught exception ends the environment, as it does in the Node runtime.
import { pathToFileURL } from "node:url";
import type { Context } from "aws-lambda";
import type { ChildMessage, InvokeMessage, SerializedError } from "./execution-environment.ts";
import { createLambdaContext } from "./lambda-events.ts";

type Handler = (event: unknown, context: Context) => unknown;

const [modulePath, exportName = "handler"] = process.argv.slice(2);
if (!modulePath) throw new Error("usage: execution-environment-child.ts <module> [export]");

const send = (message: ChildMessage) => process.send?.(message);

/** Exits once the message has been handed to the IPC channel, so that the parent learns why. */
const sendAndExit = (message: ChildMessage, code: number): void => {
	const exit = () => process.exit(code);
	if (process.send) process.send(message, exit);
	else exit();
	// A message stuck behind a frozen or gone parent must not keep a broken environment alive.
	setTimeout(exit, 1000).unref();
};

const serializeError = (error: unknown): SerializedError => {
	if (error instanceof Error) {
		const fields = error as Error & { code?: unknown; statusCode?: unknown };
		return {
			name: error.name,
			message: error.message,
			...(typeof fields.code === "string" ? { code: fields.code } : {}),
			...(typeof fields.statusCode === "number" ? { statusCode: fields.statusCode } : {}),
			...(error.stack ? { stack: error.stack } : {}),
		};
	}
	return { name: "Error", message: String(error) };
};

// The environment's own state (the loaded handler), not an invocation's: this process is the environment.
let loading: Promise<Handler> | undefined;

const loadHandler = (): Promise<Handler> => {
	loading ??= import(pathToFileURL(modulePath).href).then((module: Record<string, unknown>) => {
		const handler = module[exportName];
		if (typeof handler !== "function") {
			throw new Error(`${modulePath} has no exported function "${exportName}"`);
		}
		return handler as Handler;
	});
	return loading;
};

const invoke = async (message: InvokeMessage) => {
	const cold = loading === undefined;
	const initStart = performance.now();
	let handler: Handler;
	try {
		handler = await loadHandler();
	} catch (error) {
		// Lambda reports Runtime.ImportModuleError and discards the environment.
		sendAndExit({ type: "crash", kind: "Runtime.ImportModuleError", error: serializeError(error) }, 1);
		return;
	}
	const initMs = cold ? performance.now() - initStart : undefined;
	const context = createLambdaContext({
		functionName: message.functionName,
		awsRequestId: message.requestId,
		deadlineMs: message.deadlineMs,
		memoryLimitInMB: message.memoryLimitInMB,
	});
	const start = performance.now();
	try {
		const result = await handler(message.event, context);
		// The runtime answers with JSON.stringify(result): a handler's undefined arrives as null, dates as strings.
		const json = result === undefined ? undefined : JSON.stringify(result);
		send({
			type: "result",
			id: message.id,
			ok: true,
			...(json === undefined ? {} : { json }),
			cold,
			...(initMs === undefined ? {} : { initMs }),
			durationMs: performance.now() - start,
			rss: process.memoryUsage().rss,
			activeResources: process.getActiveResourcesInfo().length,
		});
	} catch (error) {
		send({
			type: "result",
			id: message.id,
			ok: false,
			error: serializeError(error),
			cold,
			...(initMs === undefined ? {} : { initMs }),
			durationMs: performance.now() - start,
			rss: process.memoryUsage().rss,
			activeResources: process.getActiveResourcesInfo().length,
		});
	}
};

process.on("message", (message: InvokeMessage) => {
	if (message?.type === "invoke") void invoke(message);
});

// The Node runtime turns these into an error for the invocation and exits; the next invocation is a cold start.
process.on("unhandledRejection", (reason) => {
	sendAndExit(
		{ type: "crash", kind: "Runtime.UnhandledPromiseRejection", error: serializeError(reason) },
		128,
	);
});
process.on("uncaughtException", (error) => {
	sendAndExit({ type: "crash", kind: "Runtime.UncaughtException", error: serializeError(error) }, 129);
});
// The parent went away: an environment without a runtime API has nothing left to do.
process.on("disconnect", () => process.exit(0));

send({ type: "ready" });
