// The detail page refreshes every 2 s; a refresh while someone edits one of its forms would
// wipe their input, so it is skipped then. A listener, not an hx-trigger filter: the CSP
// forbids eval, which htmx's filters need.
document.addEventListener("htmx:confirm", (event) => {
  const box = document.getElementById("detail");
  if (event.target !== box) return;
  const active = document.activeElement;
  const typing = box.contains(active) && active.tagName === "INPUT";
  if (typing || Array.from(box.querySelectorAll("input[name=note]")).some((input) => input.value)) {
    event.preventDefault();
  }
});
