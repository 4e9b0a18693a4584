"""The browser dashboard: health and cost pages behind the admin key, rendered on the server.

``site`` wires it into an app (``setup_dashboard``); ``state`` holds what lives on the app and
the login check every page passes; ``session`` and ``login`` the signed cookie and the form;
``views`` the four pages; ``figures`` their charts; ``format`` the Jinja filters. Templates, the
stylesheet and the optional auto-refresh script live in the repository's ``templates/`` folder.
"""
