/** The release version (kept equal to package.json's by a test; compiled into the single binary). */
export const VERSION = "0.1.0";
