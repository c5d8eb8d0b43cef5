// Training inputs that work but train badly, found before any GPU work: an image far smaller than the
// training resolution is blown up into a blur the model learns as if it were a photo, and a caption longer
// than the text encoder's window is silently cut. Platform-free (sizes and token counts in, messages out),
// so the CLI and the browser app word them the same.

import { CLIP_MAX_LENGTH, CLIP_PROMPT_BUDGET } from '../models/tokenizer';

/** Images whose short side is below this share of the training resolution are "far smaller". */
export const SMALL_IMAGE_SHARE = 0.5;

/** Why an image of this size trains badly at `resolution`, or null when it is fine. */
export function smallImageProblem(width: number, height: number, resolution: number): string | null {
  const side = Math.min(width, height);
  if (side >= resolution * SMALL_IMAGE_SHARE) return null;
  return `${width}x${height} pixels, far below the ${resolution}x${resolution} training resolution: it would be enlarged ${(resolution / side).toFixed(side < 10 ? 0 : 1)}x into a blur`;
}

/** What happens to a caption of `tokens` tokens (BOS and EOS not counted), or null when it fits. */
export function longCaptionProblem(tokens: number): string | null {
  if (tokens <= CLIP_PROMPT_BUDGET) return null;
  return `${tokens} tokens, longer than the text encoder's ${CLIP_MAX_LENGTH}-token window (${CLIP_PROMPT_BUDGET} plus start and end): everything after token ${CLIP_PROMPT_BUDGET} is cut`;
}
