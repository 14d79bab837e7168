export function findChromium(): string | undefined;
export function chromiumPath(): string;
export function chromiumArgs(): string[];
export const CHROMIUM_MISSING_MESSAGE: string;
