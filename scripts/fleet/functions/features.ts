// What the middleware being simulated offers, read from the same source the fleet's function is bundled from: the
// driver bundles this next to the function and imports it, to know which contenders it can run. The middleware is
// being extended while this simulation exists (connectRetry, serverPressure); an option it does not know yet is a
// TypeError at cold start, so a contender that needs one is skipped, and said so, rather than run.
import { defaults } from "@middy-conn/mysql";

export const features = {
	/** `connectRetry` (retry of connects refused by a full server): the "scoped, no retry" contender needs it. */
	connectRetry: "connectRetry" in defaults,
	/** `serverPressure` (pool mode stops keeping connections warm when the server is nearly full): the "pool, no
	 * serverPressure" contender needs it. */
	serverPressure: "serverPressure" in defaults,
};
