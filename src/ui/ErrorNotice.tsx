// A failure the engine reported, as a notice screen readers announce (role=alert). Nothing when there is none.

export function ErrorNotice({ error }: { error: { message: string } | null | undefined }) {
  if (!error) return null;
  return (
    <div className="notice notice-error" role="alert">
      <p>{error.message}</p>
    </div>
  );
}
