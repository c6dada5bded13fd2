"""The guest book: a form, a redirect after POST, a thank-you page."""
