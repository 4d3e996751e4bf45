/**
 * What a file of the FUSE tree must supply: the two halves of a sysfs attribute
 * (`struct attribute`'s show/store pair in the 2005 patch, kernel 2.6.11 sysfs).
 *
 * The tree owns the sysfs mechanics (rendering once per open at offset 0, the 4095-byte store
 * limit, C-string truncation at the first NUL, returning strlen); an attribute owns only meaning.
 */
export interface Attribute {
  /** Render the whole file. Called when a read starts at offset 0. */
  show(): string;
  /**
   * Handle one write(2): `text` is the written bytes cut at the first NUL and at 4095 bytes,
   * decoded as latin1 (one char per byte). 'accepted' makes the write return the string's
   * length, as the patch's `return strlen(buf)`; 'rejected' makes it fail with EINVAL.
   */
  store(text: string): StoreOutcome;
}

export type StoreOutcome = 'accepted' | 'rejected';
