/** The iterator's next value, or a failure naming the wait when none comes within `ms`. */
export async function pull<T>(iterator: AsyncIterator<T>, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([
    iterator.next(),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`nothing within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
  if (result.done) throw new Error('the iterator ended');
  return result.value;
}
