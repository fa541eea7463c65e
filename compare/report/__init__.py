"""The report: the numbers behind each chart (data), the Altair charts, and the HTML page."""
