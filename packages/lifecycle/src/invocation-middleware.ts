// The wiring every middleware of middy-conn has around its invocation resource, in one copy: `before` registers
// the resource with the invocation (whichever path Middy takes then ends it) and puts it on the Lambda context
// with `waitUntil`; `after` ends it; `onError` ends it and only logs a failure, since the invocation already fails
// with its own error, which must not be replaced.
import type { Request } from "@middy/core";
import {
	Invocation,
	type InvocationOptions,
	type InvocationResource,
	type ResourceHandle,
} from "./invocation.ts";

export interface InvocationMiddlewareOptions {
	/** The package, for the cleanup warning (`<pkg>: cleanup failed`) and the name of the request's slot. */
	readonly pkg: string;
	/** The middleware's name: its hooks are `<name>MiddlewareBefore`, `...After`, `...OnError` (Middy's profiling). */
	readonly name: string;
	/** Where the handler finds the resource on the context. */
	readonly contextKey: string;
	/** The invocation's logger (also for the cleanup warning) and background tasks' limits. */
	readonly invocationOptions: InvocationOptions;
	/** Stats are reported on every path, an early response included, even when the resource was not used. */
	readonly reportsStats: boolean;
	/** The invocation's resource, and what goes at `context[contextKey]`. Called in `before`: no I/O. */
	readonly open: (
		invocation: Invocation,
		request: Request,
	) => { resource: InvocationResource; value: unknown };
}

export interface InvocationMiddlewareHooks {
	before(request: Request): void;
	/** Not async: an invocation with nothing to wait for returns nothing, and Middy then does not await. */
	after(request: Request): Promise<void> | undefined;
	/** Never rejects. */
	onError(request: Request): Promise<void> | undefined;
}

const named = <T extends (...args: never[]) => unknown>(name: string, fn: T): T =>
	Object.defineProperty(fn, "name", { value: name });

/** The `before`, `after` and `onError` of a middleware that opens one resource per invocation. */
export const invocationMiddleware = ({
	pkg,
	name,
	contextKey,
	invocationOptions,
	reportsStats,
	open,
}: InvocationMiddlewareOptions): InvocationMiddlewareHooks => {
	// Where this middleware instance keeps its handle on the invocation's resource, on the request: one symbol per
	// instance, so that two of them (two databases, two origins) work side by side with two contextKeys.
	const slot = Symbol(`${pkg}:${contextKey}`);
	type WithSlot = Request & { [slot]?: ResourceHandle };
	const { logger } = invocationOptions;

	return {
		before: named(`${name}MiddlewareBefore`, (request: Request): void => {
			const invocation = Invocation.of(request, invocationOptions);
			const { resource, value } = open(invocation, request);
			// Registered before anything can use it: whichever path ends the invocation closes it.
			(request as WithSlot)[slot] = invocation.register(resource);
			if (reportsStats) invocation.inUse();
			const context = request.context as unknown as Record<string, unknown>;
			context[contextKey] = value;
			context.waitUntil = invocation.waitUntil;
		}),
		after: named(`${name}MiddlewareAfter`, (request: Request) => (request as WithSlot)[slot]?.end()),
		onError: named(`${name}MiddlewareOnError`, (request: Request) =>
			(request as WithSlot)[slot]?.end()?.catch((error: unknown) => {
				logger.warn(`${pkg}: cleanup failed`, { error });
			}),
		),
	};
};
