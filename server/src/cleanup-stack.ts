/** Undoes what a start did, in reverse order: each part registers its own cleanup once, right after it is made. */
export class CleanupStack {
  #steps: { name: string; undo: () => unknown }[] = [];

  constructor(private readonly onError: (message: string, err: unknown) => void) {}

  /** Registers how to undo what was just made. */
  defer(name: string, undo: () => unknown): void {
    this.#steps.push({ name, undo });
  }

  /** Runs every cleanup, last registered first; one that fails is reported and the rest still run. */
  async unwind(): Promise<void> {
    for (let step = this.#steps.pop(); step !== undefined; step = this.#steps.pop()) {
      try {
        await step.undo();
      } catch (err) {
        this.onError(`cleanup failed: ${step.name}`, err);
      }
    }
  }
}
