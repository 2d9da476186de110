/** The gateway's version, as `--version` prints it and traces report it. */
export const VERSION = "0.1.0";
