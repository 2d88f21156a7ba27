// datagen review: keyboard shortcuts on a row page (a: accept, r: pick a reject reason,
// n: next unreviewed in this cell). Everything works without this file.
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
  const click = (id) => { const el = document.getElementById(id); if (el) { event.preventDefault(); el.click(); } };
  if (event.key === "a") click("accept");
  else if (event.key === "n") click("next-unreviewed");
  else if (event.key === "r") {
    const select = document.getElementById("reject-reason");
    if (select) { event.preventDefault(); select.focus(); }
  }
});
