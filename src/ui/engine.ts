// The app's one engine client: every screen's store talks to the engine worker through it. The worker starts
// on the first call.

import { createEngineClient, type EngineClient } from '../worker/client';

let client: EngineClient | null = null;

export function engine(): EngineClient {
  client ??= createEngineClient();
  return client;
}
