"""The browser dashboard: health and cost pages behind the admin key, rendered on the server.

``site`` wires it into an app (``setup_dashboard``), ``session`` holds the login and its signed
cookie, ``views`` the page handlers, ``format`` the Jinja filters. Templates and the stylesheet
live in the repository's top-level ``templates/`` folder.
"""
